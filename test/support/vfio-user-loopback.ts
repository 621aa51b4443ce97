// A vfio-user client and server joined in-process (endpoint.ts loopback
// wires): the server's device model runs on the client's thread, with the
// same messages and descriptors as over a socket.
import { VfioUserClient, type DmaTarget } from '../../src/devices/vfio-user/client.js';
import { loopbackWires } from '../../src/devices/vfio-user/endpoint.js';
import { VfioUserServer, type ServedDevice } from '../../src/devices/vfio-user/server.js';

export function loopbackClient(device: ServedDevice, dma?: DmaTarget): { client: VfioUserClient; server: VfioUserServer } {
  const [a, b] = loopbackWires();
  const server = new VfioUserServer(device);
  const serverEp = server.connect(b);
  const client = new VfioUserClient(a, dma);
  a.peerEndpoint = serverEp;
  b.peerEndpoint = client.endpoint;
  client.negotiate();
  return { client, server };
}
