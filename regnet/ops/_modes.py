"""Integer codes of the sampling options, as ATen's grid sampler numbers them (the Triton
kernels use the same codes as ``constexpr`` arguments)."""

MODE_CODE = {"bilinear": 0, "nearest": 1}
PADDING_CODE = {"zeros": 0, "border": 1, "reflection": 2}
