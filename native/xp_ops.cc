// xp's own TensorFlow kernels, registered through TensorFlow's C kernel API when Node loads this file as an
// addon; tfjs-node then runs them by name like any TensorFlow op.
//
// XpDenseRmsprop: the RMSprop update of a dense layer's kernel with the gradient computed on the fly, in place.
// For a frozen-backbone head the big kernel (37632 x 1024 for the reference) makes every step memory-bound: the
// gradient matmul writes a tensor of the kernel's size, then the update reads w, g, s and writes w, s. Here each
// gradient element g[i][j] = sum_b x[b][i] * dz[b][j] is computed where it is used, skipping zero inputs (most of a
// ReLU backbone's features), and only the kernel rows with a nonzero input in the batch are visited: the others
// keep w exactly, and their s' = rho*s decays are applied, one multiplication each as before, when the row is
// next visited or on XpRmspropCatchUp. Same math as src/accel/rmsprop.ts (stored-slot form):
//   s' = rho*s + g^2;  w' = w - step * g / sqrt(s' + eps)
// It also returns z_next = x_next w' for the next batch's inputs when they are known (x_next may have 0 rows):
// the next step's forward matmul would read the whole kernel again, while here w' is still in cache.
//
// XpSparseMatMul: x w for features x that are mostly zeros, skipping them (validation and predictions).
// XpScaleShift: x * scale - shift in place.
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
  float rho, eps, step, scale, shift;
  int64_t threads;
} Attrs;

// Backbone features after a ReLU are mostly zeros (docs/performance.md has the shares), and a zero input adds nothing to a gradient or to a matmul. Each panel of kernel rows first lists its nonzero inputs;
// skipping the zeros leaves every sum with the same terms in the same order, so the results are those of the
// dense loops. A kernel row whose inputs are all zero has a zero gradient: s' = rho*s and w' = w exactly.
#define ROWS_PER_PANEL 64
#define COLS 64
#define VECS (COLS / 16)

typedef struct Panel {
  int32_t* pending;  // [ROWS_PER_PANEL]: decays of s (steps without gradient) the row has not had yet
  uint8_t* used;     // [panel rows]: x_next reads the row
  int32_t* nb;     // [ROWS_PER_PANEL]: how many batch rows of x are nonzero in each kernel row
  int32_t* b_idx;  // [ROWS_PER_PANEL][b]: which, and
  float* b_val;    // [ROWS_PER_PANEL][b]: their values
  int32_t* nr;     // [b_next]: how many kernel rows of the panel have a nonzero x_next, per next-batch row
  int32_t* r_idx;  // [b_next][panel rows]
  float* r_val;    // [b_next][panel rows]
} Panel;

// XpSparseMatMul's panels: each row of x has a few nonzeros per panel, and its slice of z is loaded and stored
// once for all of them. A panel of the reference kernel's rows stays in L2 while every row of x goes through it;
// taller panels spill to L3 and are slower (docs/performance.md).
#define MATMUL_ROWS_PER_PANEL 64

struct Work;
typedef void (*FullPanel)(const struct Work*, const Panel*, int64_t, int64_t);

typedef struct Work {
  FullPanel full_panel;
  float *w, *s;                 // the update writes both in place; the matmul only reads w
  const float *x, *dz;          // x: [b][n]
  const float* xn;              // x_next: [b_next][n]
  int32_t* last;                // per kernel row, the step its s was last brought up to date at
  int32_t step_now;             // this update's step (1, 2, ...)
  float* z_part;  // this thread's share of z_next (its rows' terms), [b_next][m]
  int64_t n, m, b, b_next, row_begin, row_end;
  float rho, eps, step;
  bool update;         // false: XpSparseMatMul, z_next = x_next w only
  int64_t panel_rows;  // ROWS_PER_PANEL, or MATMUL_ROWS_PER_PANEL
} Work;

// A panel's rows of x and x_next are one 64-byte line per batch row: the lists read them in place.
static void list_nonzeros(const Work* k, int64_t p0, int64_t rows, Panel* P) {
  for (int64_t r = 0; r < rows; r++) {
    P->nb[r] = 0;
    P->used[r] = 0;
    if (k->update) P->pending[r] = k->step_now - k->last[p0 + r] - 1;
  }
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
      P->used[r] = 1;
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
    const int64_t at = (p0 + r) * k->m + j0;
    if (P->nb[r] == 0) {  // no gradient: w stays, s decays later (catch_up)
      if (P->used[r]) memcpy(wp[r], k->w + at, sizeof(float) * (size_t)cols);
      continue;
    }
    float g[COLS] = {0};
    for (int32_t c = 0; c < P->nb[r]; c++) {
      const float x = P->b_val[r * k->b + c];
      const float* d = k->dz + (int64_t)P->b_idx[r * k->b + c] * k->m + j0;
      for (int64_t j = 0; j < cols; j++) g[j] += x * d[j];
    }
    for (int64_t j = 0; j < cols; j++) {
      float sv = k->s[at + j];
      for (int32_t d = 0; d < P->pending[r]; d++) sv = k->rho * sv;
      const float next = k->rho * sv + g[j] * g[j];
      k->s[at + j] = next;
      wp[r][j] = k->w[at + j] - k->step * (g[j] / sqrtf(next + k->eps));
      k->w[at + j] = wp[r][j];
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

// A full panel, ROWS_PER_PANEL rows by the columns' whole blocks of COLS, with 16-float vectors (GCC's vector
// extension: one AVX-512 register, two AVX2 ones). Each row is updated from its first block to its last, so
// that w and s are read and written as one sequential stream per row: walking the panel a column block at a
// time instead, a row apart, is slower (docs/performance.md). A block's
// COLS/16 gradient accumulators stay in registers while the row's nonzero batch rows are summed. z_next then
// takes its terms from the panel's new rows, still in cache. 1/sqrt is the hardware estimate refined by one
// Newton step (relative error ~1e-7, like a rounded float) where the CPU has one.
typedef float v16 __attribute__((vector_size(64), aligned(4)));

// One next-batch row q's terms for the column block at j0: the sum over its nonzeros in the panel of x times the
// kernel row (ROW(r) gives the row's COLS/16 vectors at j0), added into this thread's z_part.
#define Z_TERMS_OF_ROW(PANEL_ROWS, ROW)                                        \
  {                                                                            \
    const int32_t* ri = P->r_idx + q * (PANEL_ROWS);                           \
    const float* rv = P->r_val + q * (PANEL_ROWS);                             \
    v16 acc[VECS];                                                             \
    for (int v = 0; v < VECS; v++) acc[v] = (v16){0};                          \
    for (int32_t c = 0; c < P->nr[q]; c++) {                                   \
      const v16* wr = ROW(ri[c]);                                              \
      const float x = rv[c];                                                   \
      for (int v = 0; v < VECS; v++) acc[v] += x * wr[v];                      \
    }                                                                          \
    v16* z = (v16*)(k->z_part + q * k->m + j0);                                \
    for (int v = 0; v < VECS; v++) z[v] += acc[v];                             \
  }

// z_next's terms from the panel's rows for the column block at j0, every next-batch row.
#define ADD_Z_TERMS(PANEL_ROWS, ROW)                                           \
    for (int64_t q = 0; q < k->b_next; q++)                                    \
      if (P->nr[q] > 0) Z_TERMS_OF_ROW(PANEL_ROWS, ROW)

#define FULL_PANEL(NAME, INV_SQRT)                                             \
  static void NAME(const Work* k, const Panel* P, int64_t p0, int64_t cols) {  \
    for (int r = 0; r < ROWS_PER_PANEL; r++) {                                 \
      const int32_t nb = P->nb[r];                                             \
      if (nb == 0) continue;                                                   \
      const int32_t* bi = P->b_idx + r * k->b;                                 \
      const float* bv = P->b_val + r * k->b;                                   \
      const int32_t pending = P->pending[r];                                   \
      for (int64_t j0 = 0; j0 < cols; j0 += COLS) {                            \
        const int64_t at = (p0 + r) * k->m + j0;                               \
        v16* w = (v16*)(k->w + at);                                            \
        v16* s = (v16*)(k->s + at);                                            \
        v16 g[VECS];                                                           \
        for (int v = 0; v < VECS; v++) g[v] = (v16){0};                        \
        for (int32_t c = 0; c < nb; c++) {                                     \
          const v16* d = (const v16*)(k->dz + (int64_t)bi[c] * k->m + j0);     \
          const float x = bv[c];                                               \
          for (int v = 0; v < VECS; v++) g[v] += x * d[v];                     \
        }                                                                      \
        for (int v = 0; v < VECS; v++) {                                       \
          v16 sv = s[v];                                                       \
          for (int32_t d = 0; d < pending; d++) sv = k->rho * sv;              \
          const v16 next = k->rho * sv + g[v] * g[v];                          \
          s[v] = next;                                                         \
          w[v] = w[v] - (k->step * g[v]) * INV_SQRT(next + k->eps);            \
        }                                                                      \
      }                                                                        \
    }                                                                          \
    for (int64_t j0 = 0; j0 < cols; j0 += COLS) ADD_Z_TERMS(ROWS_PER_PANEL, KERNEL_ROW) \
  }

// XpSparseMatMul's full panel: for each row of x, its terms from the panel's rows of w, one column block after
// another (its slice of z is touched once per panel).
#define MATMUL_PANEL(NAME)                                                     \
  static void NAME(const Work* k, const Panel* P, int64_t p0, int64_t cols) {  \
    for (int64_t q = 0; q < k->b_next; q++)                                    \
      if (P->nr[q] > 0)                                                        \
        for (int64_t j0 = 0; j0 < cols; j0 += COLS) Z_TERMS_OF_ROW(MATMUL_ROWS_PER_PANEL, KERNEL_ROW) \
  }
#define KERNEL_ROW(r) ((const v16*)(k->w + (p0 + (r)) * k->m + j0))
MATMUL_PANEL(matmul_panel_generic)

static inline v16 inv_sqrt_exact(v16 t) {
  for (int l = 0; l < 16; l++) t[l] = 1.0f / sqrtf(t[l]);
  return t;
}
FULL_PANEL(full_panel_generic, inv_sqrt_exact)

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
AVX512 FULL_PANEL(full_panel_avx512, inv_sqrt_avx512)

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
AVX2 FULL_PANEL(full_panel_avx2, inv_sqrt_avx2)
AVX512 MATMUL_PANEL(matmul_panel_avx512)
AVX2 MATMUL_PANEL(matmul_panel_avx2)
#else
#define full_panel_avx512 full_panel_generic
#define full_panel_avx2 full_panel_generic
#define matmul_panel_avx512 matmul_panel_generic
#define matmul_panel_avx2 matmul_panel_generic
#endif

// The widest of three versions the CPU runs: AVX-512, AVX2 with FMA, or portable code.
static FullPanel widest(FullPanel avx512, FullPanel avx2, FullPanel generic) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2;
#endif
  (void)avx512;
  (void)avx2;
  return generic;
}

// Denormal floats flushed to zero, as TensorFlow runs its own kernels (ScopedFlushDenormal), so that squared
// gradients of rarely active features underflow the same way as in TensorFlow's RMSprop. The calling thread
// (Node's main thread) gets its floating-point mode back.
struct FlushDenormals {
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

static void* run_rows(void* arg) {
  const Work* k = (const Work*)arg;
  FlushDenormals flush;
  Panel P;
  const size_t bmax = (size_t)(k->b > 0 ? k->b : 1), qmax = (size_t)(k->b_next > 0 ? k->b_next : 1);
  const size_t pr = (size_t)k->panel_rows;
  P.pending = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr));
  P.used = static_cast<uint8_t*>(malloc(pr));
  P.nb = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr));
  P.b_idx = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr * bmax));
  P.b_val = static_cast<float*>(malloc(sizeof(float) * pr * bmax));
  P.nr = static_cast<int32_t*>(malloc(sizeof(int32_t) * qmax));
  P.r_idx = static_cast<int32_t*>(malloc(sizeof(int32_t) * pr * qmax));
  P.r_val = static_cast<float*>(malloc(sizeof(float) * pr * qmax));
  for (int64_t p = k->row_begin; p < k->row_end; p += k->panel_rows) {
    const int64_t rows = k->row_end - p < k->panel_rows ? k->row_end - p : k->panel_rows;
    list_nonzeros(k, p, rows, &P);
    // Update panels go row by row over the full-width column blocks (each kernel row is read and written as one
    // stream) and need all their rows; matmul panels take any number. Leftover columns: the generic code.
    const int64_t full = k->m / COLS * COLS;
    int64_t j = 0;
    if (!k->update || rows == ROWS_PER_PANEL) k->full_panel(k, &P, p, j = full);
    for (; j < k->m; j += COLS) panel_generic(k, &P, p, rows, j, k->m - j < COLS ? k->m - j : COLS);
    if (k->update)
      for (int64_t r = 0; r < rows; r++)
        if (P.nb[r] > 0) k->last[p + r] = k->step_now;
  }
  free(P.pending);
  free(P.used);
  free(P.nb);
  free(P.b_idx);
  free(P.b_val);
  free(P.nr);
  free(P.r_idx);
  free(P.r_val);
  return NULL;
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

static bool is_matrix(const TF_Tensor* t, TF_DataType type) { return TF_TensorType(t) == type && TF_NumDims(t) == 2; }

// XpDenseRmsprop: updates w and s in place, brings `last` up to date and returns z_next. On bad input sets
// status and changes nothing.
static void dense_rmsprop(const Attrs* a, TF_OpKernelContext* ctx, TF_Tensor* const in[7], TF_Tensor** out, TF_Status* status) {
  // w, s, last, step, x, dz, x_next
  const bool types = is_matrix(in[0], TF_FLOAT) && is_matrix(in[1], TF_FLOAT) && TF_TensorType(in[2]) == TF_INT32 && TF_NumDims(in[2]) == 1 &&
                     TF_TensorType(in[3]) == TF_INT32 && TF_NumDims(in[3]) == 0 && is_matrix(in[4], TF_FLOAT) && is_matrix(in[5], TF_FLOAT) &&
                     is_matrix(in[6], TF_FLOAT);
  if (!types) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpDenseRmsprop: w, s, x, dz, x_next must be float32 matrices, last an int32 vector, step an int32 scalar");
    return;
  }
  const int64_t n = TF_Dim(in[0], 0), m = TF_Dim(in[0], 1), b = TF_Dim(in[4], 0), b_next = TF_Dim(in[6], 0);
  if (TF_Dim(in[1], 0) != n || TF_Dim(in[1], 1) != m || TF_Dim(in[2], 0) != n || TF_Dim(in[4], 1) != n || TF_Dim(in[5], 0) != b ||
      TF_Dim(in[5], 1) != m || TF_Dim(in[6], 1) != n) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpDenseRmsprop: shapes must be w [n,m], s [n,m], last [n], x [b,n], dz [b,m], x_next [b',n]");
    return;
  }
  const int64_t z_dims[2] = {b_next, m};
  out[0] = TF_AllocateOutput(ctx, 0, TF_FLOAT, z_dims, 2, (size_t)(b_next * m) * sizeof(float), status);
  if (TF_GetCode(status) != TF_OK) return;
  float* w = static_cast<float*>(TF_TensorData(in[0]));
  float* s = static_cast<float*>(TF_TensorData(in[1]));
  int32_t* last = static_cast<int32_t*>(TF_TensorData(in[2]));
  const int32_t step_now = *static_cast<const int32_t*>(TF_TensorData(in[3]));
  const float* x = static_cast<const float*>(TF_TensorData(in[4]));
  const float* dz = static_cast<const float*>(TF_TensorData(in[5]));
  const float* xn = static_cast<const float*>(TF_TensorData(in[6]));
  run_parallel(Work{widest(full_panel_avx512, full_panel_avx2, full_panel_generic), w, s, x, dz, xn, last, step_now, NULL, n, m, b, b_next, 0, 0, a->rho, a->eps, a->step, true,
                    ROWS_PER_PANEL},
               a->threads, static_cast<float*>(TF_TensorData(out[0])));
}

// XpRmspropCatchUp: the decays of s that rows without gradient have not had yet, up to `step`, in place.
static void rmsprop_catch_up(const Attrs* a, TF_OpKernelContext*, TF_Tensor* const in[3], TF_Tensor**, TF_Status* status) {
  if (!is_matrix(in[0], TF_FLOAT) || TF_TensorType(in[1]) != TF_INT32 || TF_NumDims(in[1]) != 1 || TF_Dim(in[1], 0) != TF_Dim(in[0], 0) ||
      TF_TensorType(in[2]) != TF_INT32 || TF_NumDims(in[2]) != 0) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpRmspropCatchUp: s must be a float32 matrix [n,m], last an int32 vector [n], step an int32 scalar");
    return;
  }
  const int64_t n = TF_Dim(in[0], 0), m = TF_Dim(in[0], 1);
  float* s = static_cast<float*>(TF_TensorData(in[0]));
  int32_t* last = static_cast<int32_t*>(TF_TensorData(in[1]));
  const int32_t step_now = *static_cast<const int32_t*>(TF_TensorData(in[2]));
  for (int64_t i = 0; i < n; i++) {
    for (int32_t d = last[i]; d < step_now; d++)
      for (int64_t j = 0; j < m; j++) s[i * m + j] = a->rho * s[i * m + j];
    if (last[i] < step_now) last[i] = step_now;
  }
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
  float* w = static_cast<float*>(TF_TensorData(in[1]));  // read only
  run_parallel(Work{widest(matmul_panel_avx512, matmul_panel_avx2, matmul_panel_generic), w, NULL, NULL, NULL, x, NULL, 0, NULL, n, m, 0, r, 0, 0, 0, 0, 0, false, MATMUL_ROWS_PER_PANEL}, a->threads,
               static_cast<float*>(TF_TensorData(out[0])));
}

// XpScaleShift: x = x * scale - shift, in place (Glorot init: uniform [0,1) numbers to [-limit, limit) without
// two more fresh buffers of the kernel's size). Two roundings, as TensorFlow's Mul then Sub: no fused multiply-add.
__attribute__((optimize("fp-contract=off"))) static void scale_shift(const Attrs* a, TF_OpKernelContext*, TF_Tensor* const in[1], TF_Tensor**,
                                                                    TF_Status* status) {
  if (TF_TensorType(in[0]) != TF_FLOAT) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "XpScaleShift: x must be float32");
    return;
  }
  float* x = static_cast<float*>(TF_TensorData(in[0]));
  int64_t n = 1;
  for (int d = 0; d < TF_NumDims(in[0]); d++) n *= TF_Dim(in[0], d);
  for (int64_t i = 0; i < n; i++) {
    const float scaled = x[i] * a->scale;
    x[i] = scaled - a->shift;
  }
}

// TensorFlow's compute callback for a kernel F with IN inputs and OUT outputs: inputs in, outputs released.
typedef void (*KernelFn)(const Attrs*, TF_OpKernelContext*, TF_Tensor* const*, TF_Tensor**, TF_Status*);
template <int IN, int OUT, KernelFn F>
static void compute(void* attrs, TF_OpKernelContext* ctx) {
  TF_Status* status = TF_NewStatus();
  TF_Tensor* in[IN] = {};
  TF_Tensor* out[OUT > 0 ? OUT : 1] = {};
  for (int i = 0; i < IN && TF_GetCode(status) == TF_OK; i++) TF_GetInput(ctx, i, &in[i], status);
  if (TF_GetCode(status) == TF_OK) F(static_cast<const Attrs*>(attrs), ctx, in, out, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelContext_Failure(ctx, status);
  for (TF_Tensor* t : in) TF_DeleteTensor(t);
  for (TF_Tensor* t : out) TF_DeleteTensor(t);
  TF_DeleteStatus(status);
}

// TensorFlow's create callback: reads the attributes the op declares (RMSPROP: rho, eps, step; RHO: rho;
// THREADS: threads; AFFINE: scale, shift).
enum { RHO = 1, RMSPROP = 2, THREADS = 4, AFFINE = 8 };
template <int WHICH>
static void* create(TF_OpKernelConstruction* ctx) {
  Attrs* a = static_cast<Attrs*>(calloc(1, sizeof(Attrs)));
  TF_Status* status = TF_NewStatus();
  if (WHICH & (RHO | RMSPROP)) TF_OpKernelConstruction_GetAttrFloat(ctx, "rho", &a->rho, status);
  if ((WHICH & RMSPROP) && TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "eps", &a->eps, status);
  if ((WHICH & RMSPROP) && TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "step", &a->step, status);
  if ((WHICH & THREADS) && TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrInt64(ctx, "threads", &a->threads, status);
  if ((WHICH & AFFINE) && TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "scale", &a->scale, status);
  if ((WHICH & AFFINE) && TF_GetCode(status) == TF_OK) TF_OpKernelConstruction_GetAttrFloat(ctx, "shift", &a->shift, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelConstruction_Failure(ctx, status);
  TF_DeleteStatus(status);
  return a;
}


// Output 0: [rows of input a, columns of input b].
static void rows_by_columns(TF_ShapeInferenceContext* ctx, int a, int b, TF_Status* status) {
  TF_ShapeHandle *x = TF_NewShapeHandle(), *w = TF_NewShapeHandle(), *rows = TF_NewShapeHandle(), *cols = TF_NewShapeHandle(),
                 *z = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, a, x, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextGetInput(ctx, b, w, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, x, 0, 1, rows, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, w, 1, 2, cols, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(ctx, rows, cols, z, status);
  if (TF_GetCode(status) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 0, z, status);
  TF_ShapeHandle* handles[] = {x, w, rows, cols, z};
  for (TF_ShapeHandle* h : handles) TF_DeleteShapeHandle(h);
}

// z = x w
static void sparse_matmul_shapes(TF_ShapeInferenceContext* ctx, TF_Status* status) { rows_by_columns(ctx, 0, 1, status); }

// z_next = x_next w
static void dense_rmsprop_shapes(TF_ShapeInferenceContext* ctx, TF_Status* status) { rows_by_columns(ctx, 6, 0, status); }


typedef struct {
  const char* name;
  const char* specs[12];  // "in:...", "out:...", "attr:..."; unused slots are NULL
  bool stateful;          // it writes its inputs
  void (*shapes)(TF_ShapeInferenceContext*, TF_Status*);
  void* (*create)(TF_OpKernelConstruction*);
  void (*compute)(void*, TF_OpKernelContext*);
} OpSpec;

static const OpSpec OPS[] = {
    {"XpDenseRmsprop",
     {"in:w: float", "in:s: float", "in:last: int32", "in:step_now: int32", "in:x: float", "in:dz: float", "in:x_next: float",
      "out:z_next: float", "attr:rho: float", "attr:eps: float", "attr:step: float", "attr:threads: int = 0"},
     true, dense_rmsprop_shapes, create<RMSPROP | THREADS>, compute<7, 1, dense_rmsprop>},
    {"XpRmspropCatchUp", {"in:s: float", "in:last: int32", "in:step_now: int32", "attr:rho: float"}, true, NULL, create<RHO>,
     compute<3, 0, rmsprop_catch_up>},
    {"XpSparseMatMul", {"in:x: float", "in:w: float", "out:z: float", "attr:threads: int = 0"}, false, sparse_matmul_shapes, create<THREADS>,
     compute<2, 1, sparse_matmul>},
    {"XpScaleShift", {"in:x: float", "attr:scale: float", "attr:shift: float"}, true, NULL, create<AFFINE>, compute<1, 0, scale_shift>},
};
static void add_spec(TF_OpDefinitionBuilder* op, const char* spec) {
  if (!strncmp(spec, "in:", 3)) TF_OpDefinitionBuilderAddInput(op, spec + 3);
  else if (!strncmp(spec, "out:", 4)) TF_OpDefinitionBuilderAddOutput(op, spec + 4);
  else TF_OpDefinitionBuilderAddAttr(op, spec + 5);
}

static int register_ops(void) {
  TF_Status* status = TF_NewStatus();
  for (const OpSpec& spec : OPS) {
    TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder(spec.name);
    for (const char* s : spec.specs)
      if (s) add_spec(op, s);
    if (spec.stateful) TF_OpDefinitionBuilderSetIsStateful(op, true);
    if (spec.shapes) TF_OpDefinitionBuilderSetShapeInferenceFunction(op, spec.shapes);
    TF_RegisterOpDefinition(op, status);
    if (TF_GetCode(status) != TF_OK) break;
    TF_RegisterKernelBuilder(spec.name, TF_NewKernelBuilder(spec.name, "CPU", spec.create, spec.compute, delete_attrs), status);
    if (TF_GetCode(status) != TF_OK) break;
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
