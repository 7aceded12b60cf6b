// Part 3 of the simulator's random seeds: test/support/sim-seeds.ts says how the range is split
// and how to replay a seed.
import { describeSeedShard } from './support/sim-seeds.js';

describeSeedShard(3);
