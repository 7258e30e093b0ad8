import { TangentError } from '../errors';

/**
 * A rendezvous or collective failed: a rank never joined, died, froze or left. The message names
 * the rank(s), the master address and the timeout. The group is unusable afterwards; create a new
 * one (a fresh port) to continue.
 */
export class DistributedError extends TangentError {
  override readonly code = 'ERR_TANGENT_DISTRIBUTED';
}
