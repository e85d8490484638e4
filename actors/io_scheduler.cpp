#include "actors/io_scheduler.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_set>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/detail/double_ended_queue.hpp>
#include <caf/detail/set_thread_name.hpp>
#include <caf/detail/thread_safe_actor_clock.hpp>
#include <caf/policy/unprofiled.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/coordinator.hpp>

namespace asio = boost::asio;

namespace herd {

namespace {

/// A worker that keeps finding jobs still reads its sockets this often.
constexpr size_t io_poll_interval = 64;

/// Asio handlers a worker runs before it looks at its job queue again.
/// io_context::poll() runs until nothing is ready, and under steady load
/// something always is: a socket handler that answers IAMATs itself (the
/// fast path) makes the next requests arrive while it runs, and the jobs
/// queued meanwhile (the registry taking its inbox) waited for as long as
/// the load lasted.
constexpr size_t io_handlers_per_turn = 16;

/// Runs the ready Asio handlers, at most io_handlers_per_turn of them;
/// returns how many ran.
size_t poll_some(asio::io_context& io) {
  size_t n = 0;
  while (n < io_handlers_per_turn && io.poll_one() > 0)
    ++n;
  return n;
}

/// An idle worker wakes this often to try to steal a job (from one worker
/// chosen at random), the interval CAF's own policy polls at when idle. So a
/// job queued behind a long handler is taken over within a few intervals
/// while another worker is idle, instead of waiting for the handler.
constexpr auto steal_interval = std::chrono::milliseconds(10);

/// The worker running on this thread, and its coordinator (null elsewhere).
thread_local void* tl_worker = nullptr;
thread_local const void* tl_coordinator = nullptr;

class io_policy : public caf::policy::unprofiled {
 public:
  using queue_type = caf::detail::double_ended_queue<caf::resumable>;
  using work_guard = asio::executor_work_guard<asio::io_context::executor_type>;

  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}
    std::atomic<size_t> next_worker{0};
  };

  struct worker_data {
    /// The prototype the coordinator copies into each worker.
    explicit worker_data(caf::scheduler::abstract_coordinator*) {}
    /// A worker's own data: its context is created here, and kept running
    /// (run_one blocks instead of returning) by the work guard.
    worker_data(const worker_data& prototype)
        : io(std::make_unique<asio::io_context>(1)),
          guard(asio::make_work_guard(*io)),
          rng(static_cast<unsigned>(reinterpret_cast<uintptr_t>(&prototype) ^
                                    reinterpret_cast<uintptr_t>(this))) {}

    queue_type queue;
    std::unique_ptr<asio::io_context> io;
    std::optional<work_guard> guard;
    /// Set while the worker is (about to be) blocked in epoll: an enqueue
    /// from another thread then posts a no-op to wake it.
    std::atomic<bool> sleeping{false};
    size_t since_io = 0;
    std::minstd_rand rng;
  };

  template<class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    using worker_type = typename Coordinator::worker_type;
    if (tl_worker != nullptr && tl_coordinator == self) {
      // From one of our workers outside an actor (a socket handler): run it
      // on this worker, which is awake, so no wake-up is needed.
      d(static_cast<worker_type*>(tl_worker)).queue.append(job);
      return;
    }
    auto* w = self->worker_by_id(d(self).next_worker.fetch_add(1) %
                                 self->num_workers());
    w->external_enqueue(job);
  }

  template<class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    auto& data = d(self);
    data.queue.append(job);
    // Pairs with the fence in dequeue: either the worker sees the job before
    // it blocks, or this thread sees `sleeping` and wakes it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (data.sleeping.load(std::memory_order_relaxed) &&
        data.sleeping.exchange(false))
      asio::post(*data.io, [] {});
  }

  template<class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    // An actor sending to another. At the back, not the front as in CAF's
    // own policy: sessions that each send an update to the registry in one
    // round of reads then reach it as one batch, which it handles in one
    // resume.
    append(self, job);
  }

  template<class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    append(self, job);
  }

  /// Appends to `self`'s queue. CAF calls internal_enqueue through the
  /// sender's execution unit, which is not always the calling thread's (a
  /// promise delivered from a socket handler): then `self` may be asleep
  /// and is woken.
  template<class Worker> void append(Worker* self, caf::resumable* job) {
    if (tl_worker == self)
      d(self).queue.append(job);
    else
      external_enqueue(self, job);
  }

  template<class Worker> caf::resumable* try_steal(Worker* self) {
    auto* parent = self->parent();
    const size_t n = parent->num_workers();
    if (n < 2)
      return nullptr;
    auto& data = d(self);
    size_t victim = data.rng() % (n - 1);
    if (victim >= self->id())
      ++victim;
    return d(parent->worker_by_id(victim)).queue.take_tail();
  }

  template<class Worker> caf::resumable* dequeue(Worker* self) {
    auto& data = d(self);
    if (tl_worker != self) {
      // First job of this thread: name it for top -H and perf.
      tl_worker = self;
      tl_coordinator = self->parent();
      caf::detail::set_thread_name("herd.worker");
    }
    if (++data.since_io >= io_poll_interval) {
      data.since_io = 0;
      poll_some(*data.io);
    }
    for (;;) {
      if (auto* job = data.queue.take_head())
        return job;
      data.since_io = 0;
      // The ready socket handlers, without waiting; each read enqueues its
      // session here, and the loop then runs them.
      if (poll_some(*data.io) > 0)
        continue;
      if (auto* job = try_steal(self))
        return job;
      data.sleeping.store(true, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (auto* job = data.queue.take_head()) {
        data.sleeping.store(false, std::memory_order_relaxed);
        return job;
      }
      // epoll until a socket, a timer or a wake-up; with others to steal
      // from, no longer than the steal interval.
      if (self->parent()->num_workers() > 1)
        data.io->run_one_for(steal_interval);
      else
        data.io->run_one();
      data.sleeping.store(false, std::memory_order_relaxed);
    }
  }

  template<class Worker, class UnaryFunction>
  void foreach_resumable(Worker* self, UnaryFunction f) {
    for (auto* job = d(self).queue.take_head(); job != nullptr;
         job = d(self).queue.take_head())
      f(job);
  }

  template<class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator*, UnaryFunction) {}
};

} // namespace
} // namespace herd

/// The io workers' loop: CAF's worker loop without its per-job logging
/// context. CAF's loop tags the thread with the actor's ID for log lines
/// before each job, through a dynamic_cast (a type-name compare across
/// shared objects) and two calls into the logger; the CAF we build against
/// writes no log lines (CAF_LOG_LEVEL_QUIET), and our own logs name actors
/// themselves. At one request per job that was about a tenth of a
/// request's user time. The rest is CAF's loop as it is.
template<> void caf::scheduler::worker<herd::io_policy>::run() {
  for (;;) {
    auto* job = policy_.dequeue(this);
    switch (job->resume(this, max_throughput_)) {
    case resumable::resume_later:
      // still referenced: it stays in the loop
      policy_.resume_job_later(this, job);
      break;
    case resumable::done:
      policy_.after_completion(this, job);
      intrusive_ptr_release(job);
      break;
    case resumable::awaiting_message:
      // enqueued again, with a new reference, when a message arrives
      intrusive_ptr_release(job);
      break;
    case resumable::shutdown_execution_unit:
      policy_.after_completion(this, job);
      policy_.before_shutdown(this);
      return;
    }
  }
}

namespace herd {
namespace {

/// CAF's clock, minus a wake-up per actor exit. Every actor that quits
/// asks the clock to cancel its timeouts, and CAF's thread-safe clock hands
/// each such request to its own thread: one thread switch per exit, which
/// with an actor per Places request was a tenth of a WHATSAT's cost. This
/// clock remembers which actors ever set a timeout (few do: peer links and
/// the metrics reporter) and passes on only their cancellations.
class quiet_clock final : public caf::detail::thread_safe_actor_clock {
 public:
  using super = caf::detail::thread_safe_actor_clock;

  void set_ordinary_timeout(time_point t, caf::abstract_actor* self,
                            caf::atom_value type, uint64_t id) override {
    remember(self);
    super::set_ordinary_timeout(t, self, type, id);
  }

  void set_request_timeout(time_point t, caf::abstract_actor* self,
                           caf::message_id id) override {
    remember(self);
    super::set_request_timeout(t, self, id);
  }

  void set_multi_timeout(time_point t, caf::abstract_actor* self,
                         caf::atom_value type, uint64_t id) override {
    remember(self);
    super::set_multi_timeout(t, self, type, id);
  }

  void cancel_ordinary_timeout(caf::abstract_actor* self,
                               caf::atom_value type) override {
    if (known(self, false))
      super::cancel_ordinary_timeout(self, type);
  }

  void cancel_request_timeout(caf::abstract_actor* self,
                              caf::message_id id) override {
    if (known(self, false))
      super::cancel_request_timeout(self, id);
  }

  void cancel_timeouts(caf::abstract_actor* self) override {
    if (known(self, true))
      super::cancel_timeouts(self);
  }

 private:
  void remember(caf::abstract_actor* self) {
    std::lock_guard<std::mutex> guard(mtx_);
    with_timeouts_.insert(self->id());
  }

  bool known(caf::abstract_actor* self, bool forget) {
    std::lock_guard<std::mutex> guard(mtx_);
    auto i = with_timeouts_.find(self->id());
    if (i == with_timeouts_.end())
      return false;
    if (forget)
      with_timeouts_.erase(i);
    return true;
  }

  std::mutex mtx_;
  std::unordered_set<caf::actor_id> with_timeouts_;
};

/// CAF's coordinator with the io policy and the quiet clock (which runs on a
/// thread of its own; the base class's clock then stays idle).
class io_coordinator final : public caf::scheduler::coordinator<io_policy> {
 public:
  using super = caf::scheduler::coordinator<io_policy>;
  using super::super;

  quiet_clock& clock() noexcept override { return clock_; }

 protected:
  void start() override {
    clock_thread_ = std::thread([this] {
      caf::detail::set_thread_name("caf.clock");
      system().thread_started();
      clock_.run_dispatch_loop();
      system().thread_terminates();
    });
    super::start();
  }

  void stop() override {
    super::stop();
    clock_.cancel_dispatch_loop();
    clock_thread_.join();
  }

 private:
  quiet_clock clock_;
  std::thread clock_thread_;
};

} // namespace

void use_io_scheduler(caf::actor_system_config& cfg) {
  cfg.module_factories.push_back(
      [](caf::actor_system& sys) -> caf::actor_system::module* {
        return new io_coordinator(sys);
      });
}

std::vector<asio::io_context*> worker_io_contexts(caf::actor_system& sys) {
  std::vector<asio::io_context*> result;
  auto* co = dynamic_cast<io_coordinator*>(&sys.scheduler());
  if (co == nullptr)
    return result;
  for (size_t i = 0; i < co->num_workers(); ++i)
    result.push_back(co->worker_by_id(i)->data().io.get());
  return result;
}

} // namespace herd
