//! Every wgpu shader against the cpu backend, op by op, on lavapipe in CI (see common/parity.rs).

mod common;

use common::parity::{self, Pair};

macro_rules! parity_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            let Some(dev) = common::wgpu_device() else { return };
            let cpu = common::cpu_device();
            parity::$name(&Pair::new(&cpu, &dev));
        }
    )*};
}

parity_tests!(encoder, layernorm, matmul, attention, kv_cache_decode, activation, crossentropy, adamw, small_ops);
