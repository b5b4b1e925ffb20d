// The host build's stand-in for the CUDA toolkit's <cuda_fp16.h>: see cuda_host.h.
#pragma once
#include "cuda_host.h"
