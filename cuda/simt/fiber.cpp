#include "simt/fiber.h"

#include <cstdlib>
#include <cstring>
#include <new>

// GCC defines __SANITIZE_ADDRESS__ under -fsanitize=address; clang has the feature test.
#if defined(__SANITIZE_ADDRESS__)
#define CUSTOMML_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUSTOMML_ASAN 1
#endif
#endif
#ifndef CUSTOMML_ASAN
#define CUSTOMML_ASAN 0
#endif
#if CUSTOMML_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace customml::simt {

#if defined(__x86_64__) && defined(__linux__)
// customml_simt_switch(void** save_sp, void* load_sp): pushes the System V callee-saved
// registers and the SSE / x87 control words, stores rsp in *save_sp, loads load_sp and
// pops the same set from the other stack. Everything else is caller-saved, so the
// compiler has already spilled it around the call.
extern "C" void customml_simt_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl customml_simt_switch
  .hidden customml_simt_switch
  .type customml_simt_switch, @function
customml_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size customml_simt_switch, .-customml_simt_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

Fiber::~Fiber() { std::free(stack_); }

void Fiber::reset(void (*entry)(), size_t stack_bytes) {
  if (stack_bytes_ < stack_bytes) {
    std::free(stack_);
    stack_ = static_cast<char*>(std::aligned_alloc(64, stack_bytes));
    if (!stack_) throw std::bad_alloc();
    stack_bytes_ = stack_bytes;
  }
#if CUSTOMML_ASAN
  // A fiber ends by switching away, never returning from its frames, whose redzones stay
  // poisoned: unpoisoned here, or the stack's next fiber trips over them.
  ASAN_UNPOISON_MEMORY_REGION(stack_, stack_bytes_);
#endif
#if defined(__x86_64__) && defined(__linux__)
  // The first switch pops 8 bytes of control words and six registers, then returns
  // into entry with rsp = top - 8, as if entry had been called (rsp % 16 == 8).
  auto top = reinterpret_cast<uintptr_t>(stack_ + stack_bytes_) & ~static_cast<uintptr_t>(15);
  auto* slot = reinterpret_cast<uint64_t*>(top - 16);
  slot[1] = 0;  // entry's own return address: it never returns
  slot[0] = reinterpret_cast<uint64_t>(entry);
  uint64_t* regs = slot - 6;
  std::memset(regs, 0, 6 * sizeof(uint64_t));
  auto* ctrl = reinterpret_cast<uint32_t*>(regs - 1);
  // Start with the launching thread's rounding and exception masks.
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  ctrl[0] = mxcsr;
  ctrl[1] = fpucw;
  sp_ = ctrl;
#else
  getcontext(&ctx_);
  ctx_.uc_stack.ss_sp = stack_;
  ctx_.uc_stack.ss_size = stack_bytes_;
  ctx_.uc_link = nullptr;
  makecontext(&ctx_, entry, 0);
#endif
}

#if CUSTOMML_ASAN
namespace {
// The bounds of the OS thread's stack, which the scheduler runs on, as ASan reports them
// to a fiber switched to from it (fibers are only ever entered from the scheduler).
thread_local const void* tl_thread_stack_bottom = nullptr;
thread_local size_t tl_thread_stack_size = 0;
}  // namespace
#endif

void Fiber::enter() {
#if CUSTOMML_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &tl_thread_stack_bottom, &tl_thread_stack_size);
#endif
}

void Fiber::switch_to(Fiber& from, Fiber& to) { switch_stacks(from, to, false); }

void Fiber::leave(Fiber& from, Fiber& to) { switch_stacks(from, to, true); }

// ASan keeps shadow state per stack: without start/finish around the switch it takes the
// fiber's frames for overflows of the thread's stack (and loses track of what to clean
// up after an exception unwinds on a fiber).
void Fiber::switch_stacks(Fiber& from, Fiber& to, bool last) {
#if CUSTOMML_ASAN
  void* fake_stack = nullptr;
  const void* bottom = to.stack_ ? to.stack_ : tl_thread_stack_bottom;
  const size_t size = to.stack_ ? to.stack_bytes_ : tl_thread_stack_size;
  __sanitizer_start_switch_fiber(last ? nullptr : &fake_stack, bottom, size);
#else
  static_cast<void>(last);
#endif
#if defined(__x86_64__) && defined(__linux__)
  customml_simt_switch(&from.sp_, to.sp_);
#else
  swapcontext(&from.ctx_, &to.ctx_);
#endif
#if CUSTOMML_ASAN
  const void* prev_bottom = nullptr;
  size_t prev_size = 0;
  __sanitizer_finish_switch_fiber(fake_stack, &prev_bottom, &prev_size);
  if (from.stack_) {  // a fiber, resumed by the scheduler
    tl_thread_stack_bottom = prev_bottom;
    tl_thread_stack_size = prev_size;
  }
#endif
}

}  // namespace customml::simt
