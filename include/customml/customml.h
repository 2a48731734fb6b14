/* customml's C API: load a model file saved by customml (Python's model.save) and predict,
 * with no Python in the process. C99; every symbol is prefixed cml_. See docs/embedding.md.
 *
 * Threads: a cml_model is immutable once loaded; share one across threads and call
 * cml_predict / cml_predict_proba on it from any number of them at once. Each call writes
 * into the caller's buffer and allocates nothing once the model has seen a batch of that
 * size (the first call of each size may). cml_set_num_threads is process-wide.
 *
 * Errors: every function that can fail returns a cml_status; on anything but CML_OK,
 * cml_last_error() returns a message naming the argument or the problem, valid in the
 * calling thread until its next failing call. No input makes a function crash the process
 * or let a C++ exception escape. */
#ifndef CUSTOMML_CUSTOMML_H
#define CUSTOMML_CUSTOMML_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(CUSTOMML_BUILDING)
#define CML_API __declspec(dllexport)
#elif defined(_WIN32)
#define CML_API __declspec(dllimport)
#elif defined(__GNUC__)
#define CML_API __attribute__((visibility("default")))
#else
#define CML_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded model: opaque, immutable once loaded; share it across threads. */
typedef struct cml_model cml_model;

typedef enum {
  CML_OK = 0,
  CML_INVALID_ARGUMENT, /* a NULL pointer, a size that does not match, a negative count */
  CML_BAD_FILE,         /* the file is not a valid customml model (truncated, corrupt, hostile) */
  CML_IO_ERROR,         /* the file could not be read (missing, a directory, no permission) */
  CML_OUT_OF_MEMORY,
  CML_INTERNAL
} cml_status;

/* The library's version, e.g. "0.1.0". */
CML_API const char* cml_version(void);
/* The message of this thread's last failure ("" before any). */
CML_API const char* cml_last_error(void);

/* Loads the model file at path (or the size bytes at data) into *out, which is set to NULL
 * on failure. Free it with cml_model_free. */
CML_API cml_status cml_model_load(const char* path, cml_model** out);
CML_API cml_status cml_model_load_from_memory(const void* data, size_t size, cml_model** out);
/* NULL is a no-op. No call on the model may be running. */
CML_API void cml_model_free(cml_model* model);

/* The features a row has, and the outputs predict writes per row; -1 for a NULL model. */
CML_API int64_t cml_model_input_dim(const cml_model* model);
CML_API int64_t cml_model_output_dim(const cml_model* model);

/* x: rows x cols float32, row-major, cols == the input dimension; y: y_len >= rows x the
 * output dimension floats, row-major. cml_predict writes the model's outputs (logits for a
 * classifier), bit for bit what Python's model.predict returns for the same file, ISA level
 * and thread count; rows == 0 writes nothing. cml_predict_proba writes class probabilities
 * (softmax, or the sigmoid of a binary classifier's one logit), as model.predict_proba. */
CML_API cml_status cml_predict(const cml_model* model, const float* x, int64_t rows, int64_t cols, float* y,
                               int64_t y_len);
CML_API cml_status cml_predict_proba(const cml_model* model, const float* x, int64_t rows, int64_t cols, float* y,
                                     int64_t y_len);

/* The threads the kernels may use, the caller included (default: CUSTOMML_NUM_THREADS, else
 * all hardware threads); in [1, 1024]. */
CML_API cml_status cml_set_num_threads(int threads);

#ifdef __cplusplus
}
#endif

#endif /* CUSTOMML_CUSTOMML_H */
