// A conntrack for driver tests that need none: no connections, nothing to delete.
import type { Address } from '../../src/core/address.js';
import type { BucketConnections, Conntrack } from '../../src/dataplane/conntrack.js';

export class NoConntrack implements Conntrack {
  connectionsByBucket(): Promise<BucketConnections[]> {
    return Promise.resolve([]);
  }
  deleteByMark(): Promise<number> {
    return Promise.resolve(0);
  }
  deleteByDestination(_address: Address): Promise<number> {
    return Promise.resolve(0);
  }
}
