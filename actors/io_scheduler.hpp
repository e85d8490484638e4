// A CAF scheduler whose worker threads also run the sockets.
//
// CAF's own policies keep workers and I/O apart: a socket thread reads a
// line, enqueues the session actor on a worker, and wakes that worker, so
// every request crosses threads twice (a futex or a sleep on each side, and
// on a busy core a context switch). Here each worker owns one Asio
// io_context. When a worker's run queue is empty it runs ready socket
// handlers; when both are empty it blocks in epoll. A read handler enqueues
// the session on the same worker without a wake-up, the session runs next on
// that thread and writes its reply with one send(2). The hop costs a queue
// push, not a thread switch. This is the thread-per-core shape of Seastar and
// of nginx workers, with CAF actors on top.
//
// Rules the workers keep:
// - Jobs before sockets, but sockets are polled at least every
//   `io_poll_interval` jobs, so a worker that never runs dry still reads.
// - An enqueue from another thread appends to the worker's queue and, only if
//   the worker is (about to be) blocked in epoll, posts a no-op to wake it.
// - A worker about to block first tries to steal a job from another worker,
//   and an idle worker looks again every 10 ms.
// - Socket handlers never block (everything on the io_contexts is async).
// - An actor handles at most `actor_turn_messages` messages per turn, then
//   goes to the back of its worker's queue (see below).
#pragma once

#include <cstddef>
#include <vector>

#include <boost/asio/io_context.hpp>

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace herd {

/// The most messages an actor handles in one turn on a worker (CAF's
/// "scheduler.max-throughput", unbounded by default). Unbounded, an actor
/// that receives faster than it handles never ends its turn, and everything
/// queued behind it on that worker waits: on 4 cores, sessions' clients and
/// the metrics tick stalled for seconds behind the registry. Bounded, it
/// goes to the back of the queue after this many. The bound must stay above
/// what the registry receives while the other jobs on its worker take one
/// turn each (about a message per session): at 256, 512 sessions on one
/// worker outran it and its mailbox grew to 62,000.
inline constexpr size_t actor_turn_messages = 4096;

/// Makes `cfg`'s actor system use the socket-running scheduler. The number of
/// workers is still "scheduler.max-threads".
void use_io_scheduler(caf::actor_system_config& cfg);

/// The io_contexts of `sys`'s workers, one per worker, or an empty vector if
/// `sys` does not run the socket-running scheduler. They run as long as the
/// system's scheduler does.
std::vector<boost::asio::io_context*>
worker_io_contexts(caf::actor_system& sys);

} // namespace herd
