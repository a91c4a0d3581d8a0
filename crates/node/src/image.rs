//! Image decoding for `imageDatasetFromDirectory`: reads PNG/JPEG files, converts them to the
//! requested channel count and resizes them (bilinear, as TensorFlow's `tf.image.resize`, which
//! Keras' `image_dataset_from_directory` uses) into one `[batch, height, width, channels]` block of
//! floats in [0, 255]. It runs as an `AsyncTask` on a libuv worker: decoding a batch of photos
//! takes tens of milliseconds, which would stall the event loop (and so the trainer's progress
//! events and any server in the same process) if done on the main thread.
//!
//! Hostile files are expected: the decoder gets [`image::Limits`] so a header that claims a huge
//! size fails before anything is allocated, files are size-checked before they are read, and a
//! panic inside a decoder becomes an Error instead of aborting Node.

use std::io::{Cursor, Read};
use std::path::Path;

use ::image::{DynamicImage, ImageReader, Limits};
use napi::bindgen_prelude::{AsyncTask, Float32Array};
use napi::{Env, Task};
use napi_derive::napi;

use crate::guarded;

/// Largest width or height a decoded image may have. Photos are far smaller; a header claiming
/// more is almost surely corrupt or hostile, and rejecting it costs nothing.
const MAX_SIDE: u32 = 16_384;
/// Largest total allocation one decoder may make (the decoded pixels count), so a header that
/// stays under [`MAX_SIDE`] per side still cannot ask for gigabytes.
const MAX_DECODE_BYTES: u64 = 256 << 20;
/// Largest file read into memory: a PNG or JPEG over this is not a training image.
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most threads one batch decodes on.
const DECODE_THREADS: usize = 4;
/// Largest output block, in floats (1 GiB): checked before the batch is allocated.
const MAX_OUTPUT_FLOATS: u64 = 1 << 28;

fn invalid(msg: String) -> cortex_core::Error {
    cortex_core::Error::Invalid(msg)
}

/// Reads a file, refusing one larger than [`MAX_FILE_BYTES`] before allocating for it (and
/// reading at most one byte more, in case the file grows between the check and the read).
fn read_limited(path: &str) -> cortex_core::Result<Vec<u8>> {
    let file = std::fs::File::open(Path::new(path)).map_err(|e| invalid(format!("cannot read image {path}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| invalid(format!("cannot read image {path}: {e}")))?;
    if !meta.is_file() {
        // A device or FIFO (/dev/zero) has no size to check up front: not an image file.
        return Err(invalid(format!("image {path} is not a regular file")));
    }
    let len = meta.len();
    if len > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "image {path} is {len} bytes, over the {MAX_FILE_BYTES}-byte limit for one image"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot read image {path}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "image {path} grew over the {MAX_FILE_BYTES}-byte limit while read"
        )));
    }
    Ok(bytes)
}

/// Decodes one PNG or JPEG (format sniffed from the bytes, not the extension) under the limits.
fn decode(path: &str, bytes: Vec<u8>) -> cortex_core::Result<DynamicImage> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("cannot decode image {path}: {e}")))?;
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        ::image::ImageError::Limits(_) => invalid(format!(
            "cannot decode image {path}: {e} (at most {MAX_SIDE} pixels per side and {} MiB decoded)",
            MAX_DECODE_BYTES >> 20
        )),
        _ => invalid(format!("cannot decode image {path}: {e}")),
    })
}

/// The image's pixels as interleaved `u8` with `channels` (1, 3 or 4) per pixel. Colour to gray
/// uses the ITU-R 601 weights (0.299, 0.587, 0.114), as libjpeg and libpng do inside TensorFlow's
/// `decode_image(channels=1)`; gray to colour repeats the value; a missing alpha is opaque.
fn to_channels(img: DynamicImage, channels: usize) -> Vec<u8> {
    match channels {
        1 if !img.color().has_color() => img.into_luma8().into_raw(),
        1 => img
            .into_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0;
                (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32)
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect(),
        3 => img.into_rgb8().into_raw(),
        _ => img.into_rgba8().into_raw(),
    }
}

/// Bilinear resize of `src` (`in_h x in_w x c`, u8) into `dst` (`out_h x out_w x c`, f32) with
/// TensorFlow's half-pixel centres and no antialiasing, the arithmetic of `tf.image.resize(...,
/// method="bilinear")`: source coordinate `(o + 0.5) * in / out - 0.5`, neighbours clamped to the
/// image. An image already at the target size is copied exactly.
fn resize_bilinear(src: &[u8], in_h: usize, in_w: usize, c: usize, dst: &mut [f32], out_h: usize, out_w: usize) {
    struct Tap {
        lo: usize,
        hi: usize,
        frac: f32,
    }
    let taps = |out: usize, inp: usize| -> Vec<Tap> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let x = (o as f32 + 0.5) * scale - 0.5;
                let floor = x.floor();
                Tap {
                    lo: floor.max(0.0) as usize,
                    hi: (x.ceil().max(0.0) as usize).min(inp - 1),
                    frac: x - floor,
                }
            })
            .collect()
    };
    let ys = taps(out_h, in_h);
    let xs = taps(out_w, in_w);
    let at = |y: usize, x: usize, k: usize| src[(y * in_w + x) * c + k] as f32;
    for (oy, ty) in ys.iter().enumerate() {
        for (ox, tx) in xs.iter().enumerate() {
            for k in 0..c {
                let top = at(ty.lo, tx.lo, k) + (at(ty.lo, tx.hi, k) - at(ty.lo, tx.lo, k)) * tx.frac;
                let bottom = at(ty.hi, tx.lo, k) + (at(ty.hi, tx.hi, k) - at(ty.hi, tx.lo, k)) * tx.frac;
                dst[(oy * out_w + ox) * c + k] = top + (bottom - top) * ty.frac;
            }
        }
    }
}

/// Decodes, converts and resizes every file of `paths` into one block, failing on the first bad
/// file with an error that names it.
pub fn decode_images_impl(paths: &[String], height: u32, width: u32, channels: u32) -> cortex_core::Result<Vec<f32>> {
    if ![1, 3, 4].contains(&channels) {
        return Err(invalid(format!(
            "decodeImages: channels must be 1, 3 or 4, got {channels}"
        )));
    }
    if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
        return Err(invalid(format!(
            "decodeImages: image size must be 1..={MAX_SIDE} per side, got {height}x{width}"
        )));
    }
    let per_image = height as u64 * width as u64 * channels as u64;
    let total = per_image * paths.len() as u64;
    if total > MAX_OUTPUT_FLOATS {
        return Err(invalid(format!(
            "decodeImages: {} images of {height}x{width}x{channels} need {total} floats, over the limit of \
             {MAX_OUTPUT_FLOATS} per batch (use a smaller batchSize or imageSize)",
            paths.len()
        )));
    }
    let (h, w, c) = (height as usize, width as usize, channels as usize);
    let per_image = per_image as usize;
    let mut out = vec![0f32; total as usize];
    if paths.is_empty() {
        return Ok(out);
    }
    // Images decode independently: a few scoped threads share the batch (tf.data maps in
    // parallel too). Capped at DECODE_THREADS so decoding the next batch leaves the cores to the
    // training step it overlaps with.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, DECODE_THREADS)
        .min(paths.len());
    let per_thread = paths.len().div_ceil(threads);
    let results: Vec<cortex_core::Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(per_thread)
            .zip(out.chunks_mut(per_thread * per_image))
            .map(|(files, block)| {
                scope.spawn(move || {
                    for (path, dst) in files.iter().zip(block.chunks_exact_mut(per_image)) {
                        decode_into(path, dst, h, w, c)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    // The first failing file in batch order, whichever thread met it first.
    results.into_iter().collect::<cortex_core::Result<Vec<()>>>()?;
    Ok(out)
}

/// Decodes one file and resizes it into `dst` (`h x w x c`).
fn decode_into(path: &str, dst: &mut [f32], h: usize, w: usize, c: usize) -> cortex_core::Result<()> {
    let img = decode(path, read_limited(path)?)?;
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if in_w == 0 || in_h == 0 {
        return Err(invalid(format!(
            "cannot decode image {path}: it has no pixels ({in_w}x{in_h})"
        )));
    }
    let pixels = to_channels(img, c);
    resize_bilinear(&pixels, in_h, in_w, c, dst, h, w);
    Ok(())
}

/// Background decoding of one batch of image files.
pub struct DecodeImagesTask {
    paths: Vec<String>,
    height: u32,
    width: u32,
    channels: u32,
}

impl Task for DecodeImagesTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> napi::Result<Vec<f32>> {
        guarded("decodeImages", || {
            decode_images_impl(&self.paths, self.height, self.width, self.channels)
        })
    }

    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> napi::Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}

/// Decodes PNG/JPEG files off the main thread into one `[paths.length, height, width, channels]`
/// row-major block of floats in [0, 255], each image resized bilinearly (TensorFlow's half-pixel
/// convention, as Keras' `image_dataset_from_directory`). `channels` is 1 (gray), 3 (RGB) or 4
/// (RGBA). Rejects with an Error naming the file when one cannot be read or decoded, is over
/// 256 MiB, or claims more than 16384 pixels per side.
#[napi(ts_return_type = "Promise<Float32Array>")]
pub fn decode_images(
    paths: Vec<String>,
    height: u32,
    width: u32,
    channels: u32,
) -> napi::Result<AsyncTask<DecodeImagesTask>> {
    Ok(AsyncTask::new(DecodeImagesTask {
        paths,
        height,
        width,
        channels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_to_same_size_is_exact() {
        let src: Vec<u8> = (0..12).collect();
        let mut dst = vec![0f32; 12];
        resize_bilinear(&src, 2, 2, 3, &mut dst, 2, 2);
        assert_eq!(dst, src.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn upsampling_follows_half_pixel_centres() {
        // tf.image.resize([[0, 100]] as 1x2, [1, 4], "bilinear") gives [0, 25, 75, 100].
        let mut dst = vec![0f32; 4];
        resize_bilinear(&[0, 100], 1, 2, 1, &mut dst, 1, 4);
        assert_eq!(dst, vec![0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn bad_arguments_and_files_are_errors() {
        assert!(decode_images_impl(&[], 4, 4, 2).is_err());
        assert!(decode_images_impl(&[], 0, 4, 1).is_err());
        let err = decode_images_impl(&["/nonexistent/x.png".into()], 4, 4, 1).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.png"));
        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        let err = decode_images_impl(&[dir], 4, 4, 1).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
