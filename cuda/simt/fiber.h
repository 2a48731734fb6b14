#pragma once
// Defines: Fiber, a user-space execution context with its own stack, and switch_to(),
// the cooperative switch between fibers of one OS thread. On x86-64 Linux the switch is
// a few instructions of assembly (no system call: glibc's swapcontext saves the signal
// mask with one); elsewhere it falls back to POSIX ucontext.

#include <cstddef>
#include <cstdint>
#include <memory>

#if !(defined(__x86_64__) && defined(__linux__))
#include <ucontext.h>
#endif

namespace customml::simt {

class Fiber {
 public:
  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber();

  // Prepares the fiber to run entry() from the top of its stack on its next switch_to.
  // entry must never return: it ends by switching away for the last time.
  void reset(void (*entry)(), size_t stack_bytes);
  // Saves the running context into `from` and resumes `to`. Fibers switch only to and
  // from the scheduler, a Fiber never reset that runs on the OS thread's own stack.
  static void switch_to(Fiber& from, Fiber& to);
  // The first statement of every entry(), and its last switch away (`from` never resumes):
  // they complete the AddressSanitizer annotations of the switch (no-ops without ASan).
  static void enter();
  static void leave(Fiber& from, Fiber& to);

 private:
  static void switch_stacks(Fiber& from, Fiber& to, bool last);
  char* stack_ = nullptr;
  size_t stack_bytes_ = 0;
#if defined(__x86_64__) && defined(__linux__)
  void* sp_ = nullptr;
#else
  ucontext_t ctx_;
#endif
};

}  // namespace customml::simt
