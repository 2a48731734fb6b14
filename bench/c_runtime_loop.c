/* The C side of bench/c_runtime.py: loads a model with the C API and times `rounds` chunks
 * of `calls` cml_predict calls of `rows` rows (after a warm-up), printing each chunk's time
 * per call in nanoseconds. Built by bench/c_runtime.py against the installed package. */
#include <customml/customml.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: c_runtime_loop MODEL ROWS CALLS ROUNDS THREADS\n");
    return 2;
  }
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
