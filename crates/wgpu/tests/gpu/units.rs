//! Host-side helpers: pool bucket sizes and the split-K heuristic (no device needed).

use cortex_wgpu::kernels::conv::split_k_chunk;
use cortex_wgpu::pool::bucket_size;

#[test]
fn pool_buckets() {
    let max = 1 << 30;
    assert_eq!(bucket_size(0, max), 256);
    assert_eq!(bucket_size(257, max), 512);
    assert_eq!(bucket_size(64 << 20, max), 64 << 20);
    assert_eq!(bucket_size((64 << 20) + 1, max), 80 << 20);
    // Never above the device limit: fall back to 256-byte granularity.
    assert_eq!(bucket_size((1 << 30) - 1000, (1 << 30) - 512), (1 << 30) - 768);
    assert_eq!(bucket_size(600, 512), 768);
}

#[test]
fn split_k_only_for_few_tiles_and_long_k() {
    // Forward-sized GEMMs keep one chunk.
    assert_eq!(split_k_chunk(123_904, 64, 288), 288);
    // MNIST conv2 filter gradient at batch 1024: 5 tiles, k = 123904, split 102 ways.
    let chunk = split_k_chunk(288, 64, 123_904);
    assert_eq!(chunk % 16, 0);
    assert_eq!(123_904usize.div_ceil(chunk), 102);
    // Short k never splits.
    assert_eq!(split_k_chunk(9, 9, 300), 300);
}
