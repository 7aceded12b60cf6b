// IGMP mode's group membership: the host joins 239.255.c.d on the cluster interface so an IGMP
// snooping switch sends it the cluster's frames (01:00:5e:7f:c:d, the group's MAC, which the
// kernel takes frames for once joined). A UDP socket holds the membership (IP_ADD_MEMBERSHIP
// on the dedicated IP's interface): the kernel sends the joins and answers the queriers, and
// when the socket closes, however nlbd ends (SIGKILL included), the host leaves the group, so
// nothing is left for a successor to clean. The socket receives nothing: it is bound to the
// dedicated IP, which no datagram to the group is addressed to.
import dgram from 'node:dgram';

export interface GroupMembership {
  readonly group: string;
  leave(): Promise<void>;
}

export type JoinGroup = (group: string, interfaceAddress: string) => Promise<GroupMembership>;

export const joinIgmpGroup: JoinGroup = async (group, interfaceAddress) => {
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: interfaceAddress, port: 0 }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  try {
    socket.addMembership(group, interfaceAddress);
  } catch (error) {
    socket.close();
    throw error;
  }
  socket.on('error', () => undefined);
  socket.unref();
  let left = false;
  return {
    group,
    leave: () =>
      new Promise<void>((resolve) => {
        if (left) {
          resolve();
          return;
        }
        left = true;
        try {
          socket.dropMembership(group, interfaceAddress);
        } catch {
          // Closing leaves the group as well.
        }
        socket.close(() => resolve());
      }),
  };
};
