/* count_allocations MODEL ROWS THREADS: after a warm-up call, counts the heap allocations
 * (malloc, calloc, realloc, aligned allocations, and so operator new) that 1,000 cml_predict
 * calls of ROWS rows make, and prints the count: 0 is the C API's promise (customml.h).
 * The executable's own malloc interposes libc's for the whole process, libcustomml too. */
#define _GNU_SOURCE
#include <customml/customml.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);

static atomic_long allocations;
static atomic_int counting;

static void count(void) {
  if (atomic_load(&counting)) atomic_fetch_add(&allocations, 1);
}
void* malloc(size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(size_t k, size_t n) {
  count();
  return __libc_calloc(k, n);
}
void* realloc(void* p, size_t n) {
  count();
  return __libc_realloc(p, n);
}
void* aligned_alloc(size_t a, size_t n) {
  count();
  return __libc_memalign(a, n);
}
void* memalign(size_t a, size_t n) {
  count();
  return __libc_memalign(a, n);
}
int posix_memalign(void** p, size_t a, size_t n) {
  count();
  *p = __libc_memalign(a, n);
  return *p ? 0 : 12;
}

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  cml_model* m = NULL;
  if (cml_model_load(argv[1], &m) != CML_OK || cml_set_num_threads(atoi(argv[3])) != CML_OK) {
    fprintf(stderr, "%s\n", cml_last_error());
    return 1;
  }
  const int64_t rows = atoll(argv[2]), in = cml_model_input_dim(m), out = cml_model_output_dim(m);
  float* x = calloc((size_t)(rows * in), sizeof(float));
  float* y = calloc((size_t)(rows * out), sizeof(float));
  for (int i = 0; i < 3; ++i) /* warm-up: workspaces grow, worker threads start */
    if (cml_predict(m, x, rows, in, y, rows * out) != CML_OK) return 1;
  atomic_store(&counting, 1);
  for (int i = 0; i < 1000; ++i)
    if (cml_predict(m, x, rows, in, y, rows * out) != CML_OK) return 1;
  atomic_store(&counting, 0);
  printf("%ld\n", (long)atomic_load(&allocations));
  cml_model_free(m);
  return 0;
}
