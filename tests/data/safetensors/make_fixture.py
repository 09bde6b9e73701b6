# Writes python_fixture.safetensors with the reference Python safetensors library, so the C++ reader is
# checked against files it did not write itself. Run: pip install safetensors numpy && python3 make_fixture.py
# (the committed file was made with safetensors 0.8.0 / numpy 2.4.6; values are asserted in test_safetensors.cpp).
import os

import numpy as np
from safetensors.numpy import save_file

tensors = {
    "f64": np.array([1.5, -2.25, 1e300], dtype=np.float64),
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0,
    "f16": np.array([0.5, -1.0, 65504.0, 6.1035156e-05], dtype=np.float16),
    "i64": np.array([-(2**62), 0, 2**62], dtype=np.int64),
    "i32": np.array([[-7, 8], [2**31 - 1, -(2**31)]], dtype=np.int32),
    "i16": np.array([-32768, 32767], dtype=np.int16),
    "i8": np.array([-128, 0, 127], dtype=np.int8),
    "u8": np.array([0, 1, 255], dtype=np.uint8),
    "bool": np.array([True, False, True], dtype=np.bool_),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "scalar": np.array(3.25, dtype=np.float32),
}
# numpy has no bfloat16: BF16 is covered by the C++ round-trip test instead.
here = os.path.dirname(os.path.abspath(__file__))
save_file(tensors, os.path.join(here, "python_fixture.safetensors"), metadata={"format": "np", "source": "python"})
