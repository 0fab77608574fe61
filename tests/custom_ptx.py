"""Hand-written PTX for custom ops' GPU kernels (the convention of ``runtime.cuda_user``)."""
from __future__ import annotations


def affine_ptx(entry: str, params: str = ".param .u64 in0, .param .u64 n0, .param .u64 out, "
               ".param .u64 n_out") -> str:
    """``out[i] = 3 * x[i] + 0.5`` on float32, one thread per element (checked against n_out)."""
    return f"""
.version 7.8
.target sm_90
.address_size 64

.visible .entry {entry}({params})
{{
    .reg .pred %p;
    .reg .b32 %r<4>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<3>;
    ld.param.u64 %rd1, [in0];
    ld.param.u64 %rd2, [out];
    ld.param.u64 %rd3, [n_out];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %ntid.x;
    mov.u32 %r3, %tid.x;
    mad.wide.u32 %rd4, %r1, %r2, 0;
    cvt.u64.u32 %rd5, %r3;
    add.u64 %rd4, %rd4, %rd5;
    setp.ge.u64 %p, %rd4, %rd3;
    @%p bra DONE;
    shl.b64 %rd6, %rd4, 2;
    add.u64 %rd7, %rd1, %rd6;
    ld.global.f32 %f1, [%rd7];
    fma.rn.f32 %f2, %f1, 0f40400000, 0f3F000000;
    add.u64 %rd7, %rd2, %rd6;
    st.global.f32 [%rd7], %f2;
DONE:
    ret;
}}
"""


def affine_np(x):
    """The same op on the host (what the kernel must agree with)."""
    return (3 * x + 0.5).astype(x.dtype)
