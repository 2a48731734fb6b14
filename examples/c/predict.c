/* customml_predict MODEL INPUT OUTPUT [--proba]: loads a model file saved by customml and
 * writes its predictions for the rows of INPUT (a float32 .npy file of shape (rows, cols),
 * C order, or a raw file of little-endian float32 rows) to OUTPUT as raw float32, row-major.
 * An example of the C API (customml/customml.h); exits 1 with the library's message on
 * any error. */
#include <customml/customml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char* what) {
  fprintf(stderr, "customml_predict: %s: %s\n", what, cml_last_error());
  return 1;
}

/* The file's bytes in *data (malloc'ed) and its size in *size; 0 on success. */
static int read_file(const char* path, unsigned char** data, long* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return 1;
  if (fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return 1;
  }
  *data = malloc(*size > 0 ? (size_t)*size : 1);
  const int ok = *data && fread(*data, 1, (size_t)*size, f) == (size_t)*size;
  fclose(f);
  return ok ? 0 : 1;
}

/* The offset of a float32, C-order .npy file's data (version 1 or 2 header), or -1. */
static long npy_data_offset(const unsigned char* d, long n) {
  if (n < 10 || memcmp(d, "\x93NUMPY", 6) != 0) return -1;
  long header = d[6] == 1 ? 10 + (d[8] | d[9] << 8) : 12 + (d[8] | d[9] << 8 | (long)d[10] << 16 | (long)d[11] << 24);
  if (header > n) return -1;
  const char* text = (const char*)d;
  /* the dict must say '<f4' and fortran_order False */
  char buf[512];
  long len = header < (long)sizeof buf - 1 ? header : (long)sizeof buf - 1;
  memcpy(buf, text, (size_t)len);
  buf[len] = '\0';
  for (long i = 0; i < len; ++i)
    if (buf[i] == '\0') buf[i] = ' ';
  if (!strstr(buf, "'<f4'") || !strstr(buf, "'fortran_order': False")) return -1;
  return header;
}

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--proba") != 0)) {
    fprintf(stderr, "usage: customml_predict MODEL INPUT OUTPUT [--proba]\n");
    return 2;
  }
  cml_model* model = NULL;
  if (cml_model_load(argv[1], &model) != CML_OK) return fail(argv[1]);
  const int64_t cols = cml_model_input_dim(model), outs = cml_model_output_dim(model);

  unsigned char* data = NULL;
  long size = 0;
  if (read_file(argv[2], &data, &size) != 0) {
    fprintf(stderr, "customml_predict: cannot read %s\n", argv[2]);
    return 1;
  }
  long begin = npy_data_offset(data, size);
  if (begin < 0) begin = 0; /* a raw float32 file */
  const long bytes = size - begin;
  if (bytes % (long)(4 * cols) != 0) {
    fprintf(stderr, "customml_predict: %s does not hold whole rows of %lld float32\n", argv[2], (long long)cols);
    return 1;
  }
  const int64_t rows = bytes / (4 * cols);
  float* x = malloc(bytes > 0 ? (size_t)bytes : 1);
  float* y = malloc(rows * outs > 0 ? (size_t)(rows * outs) * sizeof(float) : 1);
  if (!x || !y) {
    fprintf(stderr, "customml_predict: out of memory\n");
    return 1;
  }
  memcpy(x, data + begin, (size_t)bytes); /* aligned copy of the rows */
  const cml_status s = argc == 5 ? cml_predict_proba(model, x, rows, cols, y, rows * outs)
                                 : cml_predict(model, x, rows, cols, y, rows * outs);
  if (s != CML_OK) return fail("predict");

  FILE* out = fopen(argv[3], "wb");
  if (!out || fwrite(y, sizeof(float), (size_t)(rows * outs), out) != (size_t)(rows * outs) || fclose(out) != 0) {
    fprintf(stderr, "customml_predict: cannot write %s\n", argv[3]);
    return 1;
  }
  printf("%lld rows x %lld outputs -> %s\n", (long long)rows, (long long)outs, argv[3]);
  free(x);
  free(y);
  free(data);
  cml_model_free(model);
  return 0;
}
