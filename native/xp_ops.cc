// xp's own TensorFlow kernels, registered through TensorFlow's C kernel API when Node loads this file as an
// addon; tfjs-node then runs them by name like any TensorFlow op.
//
// XpDenseRmsprop: the RMSprop update of a dense layer's kernel with the gradient computed on the fly.
// For a frozen-backbone head the big kernel (37632 x 1024 for the reference) makes every step memory-bound: the
// gradient matmul writes 154 MB, then the update reads w, g, s and writes w, s (770 MB). Here each gradient
// element g[i][j] = sum_b x[b][i] * dz[b][j] is computed where it is used, so one pass reads w and s and writes
// w' and s' (616 MB), with x and dz (a few MB) in cache. Same math as rmsprop.ts (stored-slot form):
//   s' = rho*s + g^2;  w' = w - step * g / sqrt(s' + eps)
// It also returns z_next = x_next w' for the next batch's inputs when they are known (x_next may have 0 rows):
// the next step's forward matmul would read the whole kernel again, while here w' is still in cache.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensorflow/c/ops.h"
#include "tensorflow/c/tf_status.h"
#include "tensorflow/c/tf_tensor.h"

// The part of tensorflow/c/kernels.h used here, declared rather than included: that header pulls in
// stream-executor and pluggable-device headers that neither the official C library tarball nor the subset
// taken from a wheel carries. These C functions are part of TensorFlow's stable C ABI. (C++ because ops.h is.)
extern "C" {
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;
extern TF_KernelBuilder* TF_NewKernelBuilder(const char* op_name, const char* device_name, void* (*create_func)(TF_OpKernelConstruction*),
                                             void (*compute_func)(void*, TF_OpKernelContext*), void (*delete_func)(void*));
extern void TF_RegisterKernelBuilder(const char* kernel_name, TF_KernelBuilder* builder, TF_Status* status);
extern void TF_GetInput(TF_OpKernelContext* ctx, int i, TF_Tensor** tensor, TF_Status* status);
extern TF_Tensor* TF_AllocateOutput(TF_OpKernelContext* context, int index, TF_DataType dtype, const int64_t* dims, int num_dims, size_t len,
                                    TF_Status* status);
extern void TF_OpKernelContext_Failure(TF_OpKernelContext* ctx, TF_Status* status);
extern void TF_OpKernelConstruction_Failure(TF_OpKernelConstruction* ctx, TF_Status* status);
extern void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction* ctx, const char* attr_name, float* val, TF_Status* status);
extern void TF_OpKernelConstruction_GetAttrInt64(TF_OpKernelConstruction* ctx, const char* attr_name, int64_t* val, TF_Status* status);
}

typedef struct {
  float rho, eps, step;
  int64_t threads;
} Attrs;

// Backbone features after a ReLU are mostly zeros (92% for InceptionV3 at mixed7 on the reference data), and a
// zero input adds nothing to a gradient or to a matmul. Each panel of kernel rows first lists its nonzero inputs;
// skipping the zeros leaves every sum with the same terms in the same order, so the results are those of the
// dense loops. A kernel row whose inputs are all zero has a zero gradient: s' = rho*s and w' = w exactly.
#define ROWS_PER_PANEL 16
#define COLS 64
#define VECS (COLS / 16)

typedef struct Panel {
  int32_t* nb;     // [ROWS_PER_PANEL]: how many batch rows of x are nonzero in each kernel row
  int32_t* b_idx;  // [ROWS_PER_PANEL][b]: which, and
  float* b_val;    // [ROWS_PER_PANEL][b]: their values
  int32_t* nr;     // [b_next]: how many kernel rows of the panel have a nonzero x_next, per next-batch row
  int32_t* r_idx;  // [b_next][panel rows]
  float* r_val;    // [b_next][panel rows]
} Panel;

// XpSparseMatMul's panels are taller: each row of x then has a few nonzeros per panel, and its slice of z is
// loaded and stored once for all of them.
#define MATMUL_ROWS_PER_PANEL 256

struct Work;
typedef void (*FullPanel)(const struct Work*, const Panel*, int64_t, int64_t);

typedef struct Work {
  FullPanel full_panel;
  const float *w, *s, *x, *dz;  // x: [b][n]
  const float* xn;              // x_next: [b_next][n]
  float *w_out, *s_out;
  float* z_part;  // this thread's share of z_next (its rows' terms), [b_next][m]
  int64_t n, m, b, b_next, row_begin, row_end;
  float rho, eps, step;
  bool update;         // false: XpSparseMatMul, z_next = x_next w only
  int64_t panel_rows;  // ROWS_PER_PANEL, or MATMUL_ROWS_PER_PANEL
} Work;

// A panel's rows of x and x_next are one 64-byte line per batch row: the lists read them in place.
static void list_nonzeros(const Work* k, int64_t p0, int64_t rows, Panel* P) {
  for (int64_t r = 0; r < rows; r++) P->nb[r] = 0;
  for (int64_t bb = 0; bb < k->b; bb++) {
    const float* x = k->x + bb * k->n + p0;
    for (int64_t r = 0; r < rows; r++) {
      if (x[r] == 0.0f) continue;
      const int32_t c = P->nb[r]++;
      P->b_idx[r * k->b + c] = (int32_t)bb;
      P->b_val[r * k->b + c] = x[r];
    }
  }
  for (int64_t q = 0; q < k->b_next; q++) {
    const float* x = k->xn + q * k->n + p0;
    int32_t c = 0;
    for (int64_t r = 0; r < rows; r++) {
      if (x[r] == 0.0f) continue;
      P->r_idx[q * k->panel_rows + c] = (int32_t)r;
      P->r_val[q * k->panel_rows + c] = x[r];
      c++;
    }
    P->nr[q] = c;
  }
}

// Any panel, one float at a time: the edges of the matrix.
static void panel_generic(const Work* k, const Panel* P, int64_t p0, int64_t rows, int64_t j0, int64_t cols) {
  if (!k->update) {
    for (int64_t q = 0; q < k->b_next; q++) {
      float* z = k->z_part + q * k->m + j0;
      for (int32_t c = 0; c < P->nr[q]; c++) {
        const float x = P->r_val[q * k->panel_rows + c];
        const float* wr = k->w + (p0 + P->r_idx[q * k->panel_rows + c]) * k->m + j0;
        for (int64_t j = 0; j < cols; j++) z[j] += x * wr[j];
      }
    }
    return;
  }
  float wp[ROWS_PER_PANEL][COLS];
  for (int64_t r = 0; r < rows; r++) {
    float g[COLS] = {0};
    for (int32_t c = 0; c < P->nb[r]; c++) {
      const float x = P->b_val[r * k->b + c];
      const float* d = k->dz + (int64_t)P->b_idx[r * k->b + c] * k->m + j0;
      for (int64_t j = 0; j < cols; j++) g[j] += x * d[j];
    }
    const int64_t at = (p0 + r) * k->m + j0;
    for (int64_t j = 0; j < cols; j++) {
      const float next = k->rho * k->s[at + j] + g[j] * g[j];
      k->s_out[at + j] = next;
      wp[r][j] = k->w[at + j] - k->step * (g[j] / sqrtf(next + k->eps));
      k->w_out[at + j] = wp[r][j];
    }
  }
  for (int64_t q = 0; q < k->b_next; q++) {
    float* z = k->z_part + q * k->m + j0;
    for (int32_t c = 0; c < P->nr[q]; c++) {
      const float x = P->r_val[q * k->panel_rows + c];
      const float* wr = wp[P->r_idx[q * k->panel_rows + c]];
      for (int64_t j = 0; j < cols; j++) z[j] += x * wr[j];
    }
  }
}

// A full panel, ROWS_PER_PANEL rows x COLS columns, with 16-float vectors (GCC's vector extension: one AVX-512
// register, two AVX2 ones): a row's COLS/16 gradient accumulators stay in registers while its nonzero batch rows
// are summed, from the dz columns the panel's rows share in L1. The new weights are also kept in a small panel
// buffer, from which z_next takes its terms. 1/sqrt is the hardware estimate refined by one Newton step (relative
// error ~1e-7, like a rounded float) where the CPU has one.
typedef float v16 __attribute__((vector_size(64), aligned(4)));

#define FULL_PANEL(NAME, INV_SQRT, STORE)                                      \
  static void NAME(const Work* k, const Panel* P, int64_t p0, int64_t j0) {    \
    v16 wp[ROWS_PER_PANEL][VECS];                                              \
    for (int r = 0; r < ROWS_PER_PANEL; r++) {                                 \
      const int64_t at = (p0 + r) * k->m + j0;                                 \
      const v16* w = (const v16*)(k->w + at);                                  \
      const v16* s = (const v16*)(k->s + at);                                  \
      v16* wo = (v16*)(k->w_out + at);                                         \
      v16* so = (v16*)(k->s_out + at);                                         \
      const int32_t nb = P->nb[r];                                             \
      if (nb == 0) {                                                           \
        for (int v = 0; v < VECS; v++) {                                       \
          STORE(&so[v], k->rho * s[v]);                                        \
          wp[r][v] = w[v];                                                     \
          STORE(&wo[v], wp[r][v]);                                             \
        }                                                                      \
        continue;                                                              \
      }                                                                        \
      v16 g[VECS];                                                             \
      for (int v = 0; v < VECS; v++) g[v] = (v16){0};                          \
      const int32_t* bi = P->b_idx + r * k->b;                                 \
      const float* bv = P->b_val + r * k->b;                                   \
      for (int32_t c = 0; c < nb; c++) {                                       \
        const v16* d = (const v16*)(k->dz + (int64_t)bi[c] * k->m + j0);       \
        const float x = bv[c];                                                 \
        for (int v = 0; v < VECS; v++) g[v] += x * d[v];                       \
      }                                                                        \
      for (int v = 0; v < VECS; v++) {                                         \
        const v16 next = k->rho * s[v] + g[v] * g[v];                          \
        STORE(&so[v], next);                                                   \
        wp[r][v] = w[v] - (k->step * g[v]) * INV_SQRT(next + k->eps);          \
        STORE(&wo[v], wp[r][v]);                                               \
      }                                                                        \
    }                                                                          \
    for (int64_t q = 0; q < k->b_next; q++) {                                  \
      const int32_t nr = P->nr[q];                                             \
      if (nr == 0) continue;                                                   \
      v16 acc[VECS];                                                           \
      for (int v = 0; v < VECS; v++) acc[v] = (v16){0};                        \
      const int32_t* ri = P->r_idx + q * ROWS_PER_PANEL;                       \
      const float* rv = P->r_val + q * ROWS_PER_PANEL;                         \
      for (int32_t c = 0; c < nr; c++) {                                       \
        const float x = rv[c];                                                 \
        for (int v = 0; v < VECS; v++) acc[v] += x * wp[ri[c]][v];             \
      }                                                                        \
      v16* z = (v16*)(k->z_part + q * k->m + j0);                              \
      for (int v = 0; v < VECS; v++) z[v] += acc[v];                           \
    }                                                                          \
  }

// XpSparseMatMul's full panel: z_next's terms straight from the panel's rows of w (in L1 once touched).
#define MATMUL_PANEL(NAME)                                                     \
  static void NAME(const Work* k, const Panel* P, int64_t p0, int64_t j0) {    \
    for (int64_t q = 0; q < k->b_next; q++) {                                  \
      const int32_t nr = P->nr[q];                                             \
      if (nr == 0) continue;                                                   \
      v16 acc[VECS];                                                           \
      for (int v = 0; v < VECS; v++) acc[v] = (v16){0};                        \
      const int32_t* ri = P->r_idx + q * MATMUL_ROWS_PER_PANEL;                \
      const float* rv = P->r_val + q * MATMUL_ROWS_PER_PANEL;                  \
      for (int32_t c = 0; c < nr; c++) {                                       \
        const v16* wr = (const v16*)(k->w + (p0 + ri[c]) * k->m + j0);         \
        const float x = rv[c];                                                 \
        for (int v = 0; v < VECS; v++) acc[v] += x * wr[v];                    \
      }                                                                        \
      v16* z = (v16*)(k->z_part + q * k->m + j0);                              \
      for (int v = 0; v < VECS; v++) z[v] += acc[v];                           \
    }                                                                          \
  }
MATMUL_PANEL(matmul_panel_generic)

static inline v16 inv_sqrt_exact(v16 t) {
  for (int l = 0; l < 16; l++) t[l] = 1.0f / sqrtf(t[l]);
  return t;
}
#define STORE_PLAIN(at, value) (*(at) = (value))
FULL_PANEL(full_panel_generic, inv_sqrt_exact, STORE_PLAIN)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

AVX512 static inline v16 inv_sqrt_avx512(v16 t) {
  const __m512 x = (__m512)t;
  const __m512 y = _mm512_rsqrt14_ps(x);
  // y * (1.5 - 0.5 * x * y * y)
  const __m512 half_xyy = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_mul_ps(y, y));
  return (v16)_mm512_mul_ps(y, _mm512_sub_ps(_mm512_set1_ps(1.5f), half_xyy));
}
// Streaming stores: the new w and s go straight to memory, without first reading the lines they overwrite
// (a third of the traffic). They need 64-byte alignment: TensorFlow aligns buffers to 64, and the rows are
// multiples of 16 floats when this path is taken (see choose_full_panel).
#define STORE_STREAM(at, value) _mm512_stream_ps((float*)(at), (__m512)(value))
AVX512 FULL_PANEL(full_panel_avx512_stream, inv_sqrt_avx512, STORE_STREAM)
AVX512 FULL_PANEL(full_panel_avx512, inv_sqrt_avx512, STORE_PLAIN)

AVX2 static inline __m256 inv_sqrt8(__m256 x) {
  // _mm256_rsqrt_ps is accurate to 12 bits; one Newton step brings it to ~23.
  const __m256 y = _mm256_rsqrt_ps(x);
  const __m256 half_xyy = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_mul_ps(y, y));
  return _mm256_mul_ps(y, _mm256_sub_ps(_mm256_set1_ps(1.5f), half_xyy));
}
AVX2 static inline v16 inv_sqrt_avx2(v16 t) {
  __m256 half[2];
  memcpy(half, &t, sizeof t);
  half[0] = inv_sqrt8(half[0]);
  half[1] = inv_sqrt8(half[1]);
  memcpy(&t, half, sizeof t);
  return t;
}
AVX2 FULL_PANEL(full_panel_avx2, inv_sqrt_avx2, STORE_PLAIN)
AVX512 MATMUL_PANEL(matmul_panel_avx512)
AVX2 MATMUL_PANEL(matmul_panel_avx2)
#endif

// The widest version the CPU runs; streaming stores when every row starts on a 64-byte boundary.
static FullPanel choose_matmul_panel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return matmul_panel_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return matmul_panel_avx2;
#endif
  return matmul_panel_generic;
}

static FullPanel choose_full_panel(const float* const buffers[4], int64_t m) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    bool aligned = m % 16 == 0;
    for (int i = 0; i < 4; i++) aligned = aligned && ((uintptr_t)buffers[i] & 63) == 0;
    return aligned ? full_panel_avx512_stream : full_panel_avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return full_panel_avx2;
#endif
  (void)buffers;
  (void)m;
  return full_panel_generic;
}

static void* run_rows(void* arg) {
  const Work* k = (const Work*)arg;
  Panel P;
  const size_t bmax = (size_t)(k->b > 0 ? k->b : 1), qmax = (size_t)(k->b_next > 0 ? k->b_next : 1);
  const size_t pr = (size_t)k->panel_rows;
  P.nb = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr));
  P.b_idx = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr * bmax));
  P.b_val = static_cast<float*>(malloc(sizeof(float) * pr * bmax));
  P.nr = static_cast<int32_t*>(malloc(sizeof(int32_t) * qmax));
  P.r_idx = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr * qmax));
  P.r_val = static_cast<float*>(malloc(sizeof(float) * pr * qmax));
  for (int64_t p = k->row_begin; p < k->row_end; p += k->panel_rows) {
    const int64_t rows = k->row_end - p < k->panel_rows ? k->row_end - p : k->panel_rows;
    list_nonzeros(k, p, rows, &P);
    for (int64_t j = 0; j < k->m; j += COLS) {
      const int64_t cols = k->m - j < COLS ? k->m - j : COLS;
      // Update panels need all their rows; matmul panels take any number.
      if (cols == COLS && (rows == ROWS_PER_PANEL || !k->update)) k->full_panel(k, &P, p, j);
      else panel_generic(k, &P, p, rows, j, cols);
    }
  }
  free(P.nb);
  free(P.b_idx);
  free(P.b_val);
  free(P.nr);
  free(P.r_idx);
  free(P.r_val);
#if defined(__x86_64__) && defined(__GNUC__)
  _mm_sfence();  // streaming stores are visible before the op returns
#endif
  return NULL;
}

static void* create_dense_rmsprop(TF_OpKernelConstruction* ctx) {
  Attrs* a = static_cast<Attrs*>(calloc(1, sizeof(Attrs)));
  TF_Status* status = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrFloat(ctx, "rho", &a->rho, status);
  if (TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "eps", &a->eps, status);
  if (TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "step", &a->step, status);
  if (TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrInt64(ctx, "threads", &a->threads, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelConstruction_Failure(ctx, status);
  TF_DeleteStatus(status);
  return a;
}

static void delete_attrs(void* a) { free(a); }

// Runs `base` over the kernel's rows, split in panels between threads, each summing its rows' terms of z_next in
// its own buffer (64-byte aligned for the vector code); then adds the buffers into z_next.
static void run_parallel(Work base, int64_t threads, float* z_next) {
  if (threads <= 0) threads = sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  const size_t part = (size_t)(base.b_next * base.m + 16);
  float* parts = static_cast<float*>(aligned_alloc(64, sizeof(float) * part * (size_t)threads));
  memset(parts, 0, sizeof(float) * part * (size_t)threads);
  Work work[64];
  pthread_t ids[64];
  const int64_t panels = (base.n + base.panel_rows - 1) / base.panel_rows;
  for (int64_t t = 0; t < threads; t++) {
    work[t] = base;
    work[t].z_part = parts + part * (size_t)t;
    work[t].row_begin = panels * t / threads * base.panel_rows;
    work[t].row_end = panels * (t + 1) / threads * base.panel_rows;
    if (work[t].row_end > base.n) work[t].row_end = base.n;
  }
  bool started[64] = {false};
  for (int64_t t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], NULL, run_rows, &work[t]) == 0;
  run_rows(&work[0]);
  for (int64_t t = 1; t < threads; t++) {
    if (started[t]) pthread_join(ids[t], NULL);
    else run_rows(&work[t]);  // a thread that could not start: its rows on this one
  }
  for (int64_t e = 0; e < base.b_next * base.m; e++) {
    float sum = 0;
    for (int64_t t = 0; t < threads; t++) sum += parts[part * (size_t)t + (size_t)e];
    z_next[e] = sum;
  }
  free(parts);
}

// Computes the outputs from the inputs; on bad input sets status and returns.
static void dense_rmsprop(const Attrs* a, TF_OpKernelContext* ctx, TF_Tensor* const in[5], TF_Tensor** out, TF_Status* status) {
  for (int i = 0; i < 5; i++) {
    if (TF_TensorType(in[i]) != TF_FLOAT || TF_NumDims(in[i]) != 2) {
      TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpDenseRmsprop: w, s, x, dz and x_next must be float32 matrices");
      return;
    }
  }
  const int64_t n = TF_Dim(in[0], 0), m = TF_Dim(in[0], 1), b = TF_Dim(in[2], 0), b_next = TF_Dim(in[4], 0);
  if (TF_Dim(in[1], 0) != n || TF_Dim(in[1], 1) != m || TF_Dim(in[2], 1) != n || TF_Dim(in[3], 0) != b || TF_Dim(in[3], 1) != m ||
      TF_Dim(in[4], 1) != n) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpDenseRmsprop: shapes must be w [n,m], s [n,m], x [b,n], dz [b,m], x_next [b',n]");
    return;
  }
  const int64_t dims[2] = {n, m};
  const size_t bytes = (size_t)n * (size_t)m * sizeof(float);
  for (int i = 0; i < 2; i++) {
    out[i] = TF_AllocateOutput(ctx, i, TF_FLOAT, dims, 2, bytes, status);
    if (TF_GetCode(status) != TF_OK) return;
  }
  const int64_t z_dims[2] = {b_next, m};
  out[2] = TF_AllocateOutput(ctx, 2, TF_FLOAT, z_dims, 2, (size_t)(b_next * m) * sizeof(float), status);
  if (TF_GetCode(status) != TF_OK) return;

  const float* w = static_cast<const float*>(TF_TensorData(in[0]));
  const float* s = static_cast<const float*>(TF_TensorData(in[1]));
  const float* dz = static_cast<const float*>(TF_TensorData(in[3]));
  float* w_out = static_cast<float*>(TF_TensorData(out[0]));
  float* s_out = static_cast<float*>(TF_TensorData(out[1]));
  float* z_next = static_cast<float*>(TF_TensorData(out[2]));
  const float* const updated[4] = {w, s, w_out, s_out};
  const FullPanel full = choose_full_panel(updated, m);
  const float* x = static_cast<const float*>(TF_TensorData(in[2]));
  const float* xn = static_cast<const float*>(TF_TensorData(in[4]));

  run_parallel(Work{full, w, s, x, dz, xn, w_out, s_out, NULL, n, m, b, b_next, 0, 0, a->rho, a->eps, a->step, true, ROWS_PER_PANEL}, a->threads, z_next);
}

// XpSparseMatMul: z = x w for x [r,n] with mostly zero entries (backbone features), w [n,m].
static void sparse_matmul(const Attrs* a, TF_OpKernelContext* ctx, TF_Tensor* const in[2], TF_Tensor** out, TF_Status* status) {
  if (TF_TensorType(in[0]) != TF_FLOAT || TF_NumDims(in[0]) != 2 || TF_TensorType(in[1]) != TF_FLOAT || TF_NumDims(in[1]) != 2 ||
      TF_Dim(in[0], 1) != TF_Dim(in[1], 0)) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpSparseMatMul: shapes must be x [r,n] and w [n,m], float32");
    return;
  }
  const int64_t r = TF_Dim(in[0], 0), n = TF_Dim(in[1], 0), m = TF_Dim(in[1], 1);
  const int64_t dims[2] = {r, m};
  out[0] = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 2, (size_t)(r * m) * sizeof(float), status);
  if (TF_GetCode(status) != TF_OK) return;
  const float* x = static_cast<const float*>(TF_TensorData(in[0]));
  const float* w = static_cast<const float*>(TF_TensorData(in[1]));
  run_parallel(Work{choose_matmul_panel(), w, NULL, NULL, NULL, x, NULL, NULL, NULL, n, m, 0, r, 0, 0, 0, 0, 0, false, MATMUL_ROWS_PER_PANEL}, a->threads,
               static_cast<float*>(TF_TensorData(out[0])));
}

static void compute_sparse_matmul(void* attrs, TF_OpKernelContext* ctx) {
  TF_Status* status = TF_NewStatus();
  TF_Tensor* in[2] = {NULL, NULL};
  TF_Tensor* out[1] = {NULL};
  for (int i = 0; i < 2 && TF_GetCode(status) == TF_OK; i++) TF_GetInput(ctx, i, &in[i], status);
  if (TF_GetCode(status) == TF_OK) sparse_matmul(static_cast<const Attrs*>(attrs), ctx, in, out, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelContext_Failure(ctx, status);
  for (TF_Tensor* t : in) TF_DeleteTensor(t);
  TF_DeleteTensor(out[0]);
  TF_DeleteStatus(status);
}

static void* create_sparse_matmul(TF_OpKernelConstruction* ctx) {
  Attrs* a = static_cast<Attrs*>(calloc(1, sizeof(Attrs)));
  TF_Status* status = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrInt64(ctx, "threads", &a->threads, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelConstruction_Failure(ctx, status);
  TF_DeleteStatus(status);
  return a;
}

static void sparse_matmul_shapes(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  TF_ShapeHandle *x = TF_NewShapeHandle(), *w = TF_NewShapeHandle(), *rows = TF_NewShapeHandle(), *cols = TF_NewShapeHandle(),
                 *z = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, 0, x, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextGetInput(ctx, 1, w, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, x, 0, 1, rows, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, w, 1, 2, cols, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(ctx, rows, cols, z, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 0, z, status);
  TF_ShapeHandle* handles[] = {x, w, rows, cols, z};
  for (TF_ShapeHandle* h : handles) TF_DeleteShapeHandle(h);
}

static void compute_dense_rmsprop(void* attrs, TF_OpKernelContext* ctx) {
  TF_Status* status = TF_NewStatus();
  TF_Tensor* in[5] = {NULL, NULL, NULL, NULL, NULL};
  TF_Tensor* out[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 5 && TF_GetCode(status) == TF_OK; i++) TF_GetInput(ctx, i, &in[i], status);
  if (TF_GetCode(status) == TF_OK) dense_rmsprop(static_cast<const Attrs*>(attrs), ctx, in, out, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelContext_Failure(ctx, status);
  for (TF_Tensor* t : in) TF_DeleteTensor(t);
  for (TF_Tensor* t : out) TF_DeleteTensor(t);
  TF_DeleteStatus(status);
}

// w_out and s_out: w's shape; z_next: [rows of x_next, columns of w].
static void dense_rmsprop_shapes(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  TF_ShapeHandle *w = TF_NewShapeHandle(), *x_next = TF_NewShapeHandle(), *rows = TF_NewShapeHandle(), *cols = TF_NewShapeHandle(),
                 *z = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, 0, w, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextGetInput(ctx, 4, x_next, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 0, w, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 1, w, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, x_next, 0, 1, rows, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, w, 1, 2, cols, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(ctx, rows, cols, z, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 2, z, status);
  TF_ShapeHandle* handles[] = {w, x_next, rows, cols, z};
  for (TF_ShapeHandle* h : handles) TF_DeleteShapeHandle(h);
}

static int register_ops(void) {
  TF_Status* status = TF_NewStatus();
  TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder("XpDenseRmsprop");
  TF_OpDefinitionBuilderAddInput(op, "w: float");
  TF_OpDefinitionBuilderAddInput(op, "s: float");
  TF_OpDefinitionBuilderAddInput(op, "x: float");
  TF_OpDefinitionBuilderAddInput(op, "dz: float");
  TF_OpDefinitionBuilderAddInput(op, "x_next: float");
  TF_OpDefinitionBuilderAddOutput(op, "w_out: float");
  TF_OpDefinitionBuilderAddOutput(op, "s_out: float");
  TF_OpDefinitionBuilderAddOutput(op, "z_next: float");
  TF_OpDefinitionBuilderAddAttr(op, "rho: float");
  TF_OpDefinitionBuilderAddAttr(op, "eps: float");
  TF_OpDefinitionBuilderAddAttr(op, "step: float");
  TF_OpDefinitionBuilderAddAttr(op, "threads: int = 0");
  TF_OpDefinitionBuilderSetShapeInferenceFunction(op, dense_rmsprop_shapes);
  TF_RegisterOpDefinition(op, status);
  if (TF_GetCode(status) == TF_OK) {
    TF_KernelBuilder* kernel = TF_NewKernelBuilder("XpDenseRmsprop", "CPU", create_dense_rmsprop, compute_dense_rmsprop, delete_attrs);
    TF_RegisterKernelBuilder("XpDenseRmsprop", kernel, status);
  }
  if (TF_GetCode(status) == TF_OK) {
    TF_OpDefinitionBuilder* mm = TF_NewOpDefinitionBuilder("XpSparseMatMul");
    TF_OpDefinitionBuilderAddInput(mm, "x: float");
    TF_OpDefinitionBuilderAddInput(mm, "w: float");
    TF_OpDefinitionBuilderAddOutput(mm, "z: float");
    TF_OpDefinitionBuilderAddAttr(mm, "threads: int = 0");
    TF_OpDefinitionBuilderSetShapeInferenceFunction(mm, sparse_matmul_shapes);
    TF_RegisterOpDefinition(mm, status);
  }
  if (TF_GetCode(status) == TF_OK) {
    TF_KernelBuilder* kernel = TF_NewKernelBuilder("XpSparseMatMul", "CPU", create_sparse_matmul, compute_sparse_matmul, delete_attrs);
    TF_RegisterKernelBuilder("XpSparseMatMul", kernel, status);
  }
  const int ok = TF_GetCode(status) == TF_OK;
  TF_DeleteStatus(status);
  return ok;
}

// The addon's entry point (Node-API, declared here so that no Node headers are needed): registering once is
// all it does; its exports stay empty.
typedef struct napi_env__* napi_env;
typedef struct napi_value__* napi_value;

extern "C" __attribute__((visibility("default"))) napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  static int registered = 0;
  if (!registered) {
    registered = register_ops() ? 1 : -1;
  }
  (void)env;
  return exports;
}
