//! ggml's storage types and their dequantization to f32, following the block layouts of
//! llama.cpp's `ggml-quants.c` (`dequantize_row_*`), written here from the format.
//!
//! Block types pack `block_len` values into `block_bytes`: the 32-value types (`Q4_0`, `Q4_1`,
//! `Q5_0`, `Q5_1`, `Q8_0`) hold an f16 scale (and minimum) beside packed integers; the k-quants
//! (`Q4_K`, `Q5_K`, `Q6_K`) are 256-value super-blocks of 16 or 32-value sub-blocks whose scales
//! are themselves quantized.

use half::{bf16, f16};

/// A ggml tensor type, by its id in GGUF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: f16.
    F16,
    /// 2: 32 values: f16 scale, 4-bit values − 8.
    Q4_0,
    /// 3: 32 values: f16 scale and minimum, 4-bit values.
    Q4_1,
    /// 6: 32 values: f16 scale, 5-bit values − 16.
    Q5_0,
    /// 7: 32 values: f16 scale and minimum, 5-bit values.
    Q5_1,
    /// 8: 32 values: f16 scale, 8-bit values.
    Q8_0,
    /// 9: 32 values: f32 scale and sum, 8-bit values.
    Q8_1,
    /// 10.
    Q2K,
    /// 11.
    Q3K,
    /// 12: 256 values in 8 sub-blocks with 6-bit scales and minimums, 4-bit values.
    Q4K,
    /// 13: as `Q4_K` with 5-bit values.
    Q5K,
    /// 14: 256 values in 16 sub-blocks with 8-bit scales, 6-bit values − 32.
    Q6K,
    /// 15.
    Q8K,
    /// 30: bf16.
    BF16,
}

impl GgmlType {
    /// The type of GGUF id `id`, if ggml has one this build knows.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Its GGUF id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
        }
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }
}

fn half(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// `len` values of type `kind` from `bytes` (exactly `len / block_len` blocks). A type this
/// build cannot dequantize is an error naming it.
pub fn dequantize(kind: GgmlType, bytes: &[u8], len: usize) -> Result<Vec<f32>, String> {
    let (bl, bb) = (kind.block_len(), kind.block_bytes());
    if !len.is_multiple_of(bl) || bytes.len() != len / bl * bb {
        return Err(format!("{len} values of {kind:?} need {} bytes, found {}", len / bl * bb, bytes.len()));
    }
    let mut out = Vec::with_capacity(len);
    let blocks = bytes.chunks_exact(bb);
    match kind {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| half(b, 0))),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = half(b, 0);
                out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for b in blocks {
                let d = half(b, 0);
                let (m, qs) = if kind == GgmlType::Q4_1 { (half(b, 2), &b[4..20]) } else { (-8.0 * d, &b[2..18]) };
                out.extend(qs.iter().map(|&q| f32::from(q & 0xf) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for b in blocks {
                let d = half(b, 0);
                let (m, rest) = if kind == GgmlType::Q5_1 { (half(b, 2), &b[4..]) } else { (-16.0 * d, &b[2..]) };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for (j, &q) in qs.iter().enumerate() {
                    let high = ((qh >> j) & 1) << 4;
                    out.push(f32::from((q & 0xf) | high as u8) * d + m);
                }
                for (j, &q) in qs.iter().enumerate() {
                    let high = ((qh >> (j + 16)) & 1) << 4;
                    out.push(f32::from((q >> 4) | high as u8) * d + m);
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            for b in blocks {
                let (d, dmin) = (half(b, 0), half(b, 2));
                let scales = &b[4..16];
                let (qh, qs) =
                    if kind == GgmlType::Q5K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
                for j in 0..4 {
                    let q = &qs[32 * j..32 * j + 32];
                    for (half_index, shift) in [(0, 0), (1, 4)] {
                        let (sc, mn) = scale_min_k4(2 * j + half_index, scales);
                        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(mn));
                        let bit = 2 * j + half_index;
                        for l in 0..32 {
                            let high = qh.map_or(0, |h| ((h[l] >> bit) & 1) << 4);
                            out.push(d1 * f32::from(((q[l] >> shift) & 0xf) | high) - m1);
                        }
                    }
                }
            }
        }
        GgmlType::Q6K => {
            for b in blocks {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = half(b, 208);
                let mut y = [0f32; 256];
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                    let y = &mut y[128 * n..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = i32::from((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
                        let q2 = i32::from((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        let s = |k: usize| d * f32::from(sc[is + k] as i8);
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(2) * q2 as f32;
                        y[l + 64] = s(4) * q3 as f32;
                        y[l + 96] = s(6) * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
        GgmlType::Q8_1 | GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q8K => {
            return Err(format!(
                "type {kind:?} cannot be dequantized by this build (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, \
                 Q8_0, Q4_K, Q5_K and Q6_K can)"
            ));
        }
    }
    Ok(out)
}

/// The 6-bit scale and minimum of sub-block `j` of a `Q4_K` / `Q5_K` super-block, packed in 12
/// bytes: sub-blocks 0–3 in the low 6 bits of bytes 0–3 (scales) and 4–7 (minimums), 4–7 split
/// between the nibbles of bytes 8–11 and the top 2 bits of bytes 0–7.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_and_q4_1_blocks() {
        // 16 bytes of nibbles: low nibbles are values 0..16, high nibbles values 16..32.
        let qs: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let mut b = h(0.5).to_vec();
        b.extend(&qs);
        let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!(v[0], (0.0 - 8.0) * 0.5);
        assert_eq!(v[15], (15.0 - 8.0) * 0.5);
        assert_eq!(v[16], (15.0 - 8.0) * 0.5);
        assert_eq!(v[31], (0.0 - 8.0) * 0.5);
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend(&qs);
        let v = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!((v[3], v[16]), (3.0 * 0.25 - 1.0, 15.0 * 0.25 - 1.0));
    }

    #[test]
    fn q5_and_q8_blocks() {
        let mut b = h(2.0).to_vec();
        b.extend(0x0001_0001u32.to_le_bytes()); // the high bit of values 0 and 16
        b.extend([0x21u8; 16]); // low nibble 1, high nibble 2
        let v = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(
            (v[0], v[1], v[16], v[17]),
            ((17.0 - 16.0) * 2.0, (1.0 - 16.0) * 2.0, (18.0 - 16.0) * 2.0, (2.0 - 16.0) * 2.0)
        );
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!((v[0], v[31]), (-8.0, 7.5));
    }

    #[test]
    fn q4_k_scales_and_minimums_unpack_per_sub_block() {
        // Sub-block j gets scale j + 1 and minimum 2j, all nibbles 3.
        let mut scales = [0u8; 12];
        for j in 0..8u8 {
            let (sc, mn) = (j + 1, 2 * j);
            if j < 4 {
                scales[j as usize] = sc;
                scales[j as usize + 4] = mn;
            } else {
                let j = j as usize;
                scales[j + 4] = (sc & 0xf) | ((mn & 0xf) << 4);
                scales[j - 4] |= (sc >> 4) << 6;
                scales[j] |= (mn >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &scales), (j as u8 + 1, 2 * j as u8));
        }
        let mut b = h(1.0).to_vec();
        b.extend(h(0.5));
        b.extend(scales);
        b.extend([0x33u8; 128]);
        let v = dequantize(GgmlType::Q4K, &b, 256).unwrap();
        for (i, x) in v.iter().enumerate() {
            let j = i / 32;
            assert_eq!(*x, (j as f32 + 1.0) * 3.0 - 0.5 * 2.0 * j as f32, "value {i}");
        }
    }

    #[test]
    fn q6_k_values_and_scales() {
        let mut b = vec![0u8; 210];
        // All 6-bit values 33 (low nibble 1, high bits 2): value 1 after the −32 offset.
        b[..128].fill(0x11);
        b[128..192].fill(0b1010_1010);
        for (i, s) in b[192..208].iter_mut().enumerate() {
            *s = i as u8 + 1;
        }
        b[208..210].copy_from_slice(&h(0.5));
        let v = dequantize(GgmlType::Q6K, &b, 256).unwrap();
        // Value i reads scale 8·(i / 128) + 2·((i % 128) / 32) + (i % 32) / 16.
        for (i, x) in v.iter().enumerate() {
            let scale = 8 * (i / 128) + 2 * ((i % 128) / 32) + (i % 32) / 16 + 1;
            assert_eq!(*x, 0.5 * scale as f32, "value {i}");
        }
    }

    #[test]
    fn unsupported_types_and_short_data_are_errors() {
        let err = dequantize(GgmlType::Q2K, &[0u8; 84], 256).unwrap_err();
        assert!(err.contains("Q2K") && err.contains("cannot be dequantized"), "{err}");
        let err = dequantize(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err();
        assert!(err.contains("need 34 bytes"), "{err}");
    }
}
