//! A log-linear histogram of run times: exact below 32 µs, then 32 buckets per power of two
//! (values within about 3% of the truth), so percentiles of any number of tasks cost a few
//! kilobytes per function and can be updated (and un-updated, when records are deleted)
//! one task at a time.

/// Sub-buckets per power of two (and the values counted exactly).
const SUB: u64 = 32;
const SUB_BITS: u32 = 5;
/// Buckets in all: 32 exact values, then 32 per power of two from 2^5 to 2^63.
pub(crate) const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// The bucket of a value.
pub(crate) fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + sub) as usize
}

/// A value in the middle of a bucket.
pub(crate) fn value(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let e = (b - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (b - SUB) % SUB;
    let low = (1u64 << e) | (sub << (e - u64::from(SUB_BITS)));
    let width = 1u64 << (e - u64::from(SUB_BITS));
    low.saturating_add(width / 2)
}

/// Counts per bucket, with the count and sum for the mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
}

impl Histogram {
    pub(crate) fn add(&mut self, v: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
    }

    /// Takes back a value added before (a deleted record); values never added are ignored.
    pub(crate) fn remove(&mut self, v: u64) {
        let b = bucket(v);
        if let Some(c) = self.counts.get_mut(b).filter(|c| **c > 0) {
            *c -= 1;
            self.total -= 1;
            self.sum = self.sum.saturating_sub(u128::from(v));
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Histogram::default();
    }

    pub(crate) fn mean(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.sum / u128::from(self.total)) as u64)
    }

    /// The value below which a fraction `q` (0..=1) of the values lie.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(b));
            }
        }
        None
    }

    /// Compact form for the database: the sum, then (bucket, count) pairs of the non-empty
    /// buckets, as LEB128 varints.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, self.sum as u64);
        put(&mut out, (self.sum >> 64) as u64);
        for (b, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                put(&mut out, b as u64);
                put(&mut out, c);
            }
        }
        out
    }

    /// Reads [`Histogram::encode`]'s form; damaged bytes give an empty histogram.
    pub(crate) fn decode(mut bytes: &[u8]) -> Histogram {
        let mut h = Histogram::default();
        let (Some(lo), Some(hi)) = (get(&mut bytes), get(&mut bytes)) else {
            return h;
        };
        h.sum = u128::from(lo) | (u128::from(hi) << 64);
        while !bytes.is_empty() {
            let (Some(b), Some(c)) = (get(&mut bytes), get(&mut bytes)) else {
                return Histogram::default();
            };
            if b as usize >= BUCKETS {
                return Histogram::default();
            }
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS];
            }
            h.counts[b as usize] += c;
            h.total += c;
        }
        h
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let m = value(b);
            let err = (m as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 32.0 + 1e-9, "{v} -> {m}");
        }
    }

    #[test]
    fn quantiles_and_round_trip() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.add(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.mean(), Some(500_500));
        let back = Histogram::decode(&h.encode());
        assert_eq!(back, h);
        for v in 1..=1000u64 {
            h.remove(v * 1000);
        }
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(Histogram::decode(b"\xff\xff"), Histogram::default());
        assert_eq!(
            Histogram::decode(b"\x00\x00\xff\x7f\x01"),
            Histogram::default()
        );
    }
}
