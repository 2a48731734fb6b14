/* The C side of bench/c_runtime.py: loads a model with the C API and times `rounds` chunks
 * of `calls` cml_predict calls of `rows` rows (after a warm-up), printing each chunk's time
 * per call in nanoseconds. With CALLERS > 1, that many threads call the one shared model at
 * once, each `calls` times a chunk, and the time per call is the chunk's wall time over all
 * their calls (the inverse of the throughput). Built by bench/c_runtime.py against the
 * installed package. */
#include <customml/customml.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

struct caller {
  const cml_model* model;
  const float* x;
  int64_t rows, calls, in, out;
  int failed;
};

static void* call_loop(void* arg) {
  struct caller* c = arg;
  float* y = malloc(sizeof(float) * c->rows * c->out);
  for (int64_t i = 0; i < c->calls; ++i)
    if (cml_predict(c->model, c->x, c->rows, c->in, y, c->rows * c->out) != CML_OK) c->failed = 1;
  free(y);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: c_runtime_loop MODEL ROWS CALLS ROUNDS THREADS [CALLERS]\n");
    return 2;
  }
  const int callers = argc == 7 ? atoi(argv[6]) : 1;
  cml_model* m = NULL;
  if (cml_model_load(argv[1], &m) != CML_OK || cml_set_num_threads(atoi(argv[5])) != CML_OK) {
    fprintf(stderr, "%s\n", cml_last_error());
    return 1;
  }
  const int64_t rows = atoll(argv[2]), calls = atoll(argv[3]), rounds = atoll(argv[4]);
  const int64_t in = cml_model_input_dim(m), out = cml_model_output_dim(m);
  float* x = malloc(sizeof(float) * rows * in);
  float* y = malloc(sizeof(float) * rows * out);
  for (int64_t i = 0; i < rows * in; ++i) x[i] = (float)((i * 7919) % 1000) / 1000.0f;
  for (int64_t i = 0; i < calls; ++i) cml_predict(m, x, rows, in, y, rows * out);
  if (callers > 1) {
    struct caller c[64];
    pthread_t t[64];
    if (callers > 64) return 2;
    for (int64_t r = 0; r < rounds; ++r) {
      const double t0 = now_ns();
      for (int k = 0; k < callers; ++k) {
        c[k] = (struct caller){m, x, rows, calls, in, out, 0};
        pthread_create(&t[k], NULL, call_loop, &c[k]);
      }
      for (int k = 0; k < callers; ++k) {
        pthread_join(t[k], NULL);
        if (c[k].failed) return 1;
      }
      printf("%.1f\n", (now_ns() - t0) / (calls * callers));
    }
    return 0;
  }
  for (int64_t r = 0; r < rounds; ++r) {
    const double t0 = now_ns();
    for (int64_t i = 0; i < calls; ++i)
      if (cml_predict(m, x, rows, in, y, rows * out) != CML_OK) return 1;
    printf("%.1f\n", (now_ns() - t0) / calls);
  }
  cml_model_free(m);
  free(x);
  free(y);
  return 0;
}
