//! Just enough msgpack structure to cut an array into its items without decoding them.
//!
//! Raw functions work on bytes, so applying one to each item of a map chunk needs the byte
//! range of each item. Walking the format is cheaper than decoding into a generic value and
//! keeps the items' bytes exactly as the client wrote them.

/// An array split into its header and the bytes of each item.
#[derive(Debug)]
pub(crate) struct SplitArray<'a> {
    /// The array's header bytes, reusable for an output array of the same length.
    pub header: &'a [u8],
    /// Each item's complete encoding, in order.
    pub items: Vec<&'a [u8]>,
}

/// Cuts a msgpack array into its items. Errors (never panics) on anything else, on
/// truncated input and on trailing bytes.
pub(crate) fn split_array(bytes: &[u8]) -> Result<SplitArray<'_>, String> {
    let (count, header_len) = protocol::read_array_header(bytes).map_err(|e| e.to_string())?;
    let count = count as u64;
    // Every item takes at least one byte, which bounds the allocation by the input size.
    if count > (bytes.len() - header_len) as u64 {
        return Err(format!(
            "array claims {count} items but only {} bytes follow",
            bytes.len() - header_len
        ));
    }
    let mut items = Vec::with_capacity(count as usize);
    let mut pos = header_len;
    for _ in 0..count {
        let end = skip_value(bytes, pos)?;
        items.push(&bytes[pos..end]);
        pos = end;
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} bytes follow the array's last item",
            bytes.len() - pos
        ));
    }
    Ok(SplitArray {
        header: &bytes[..header_len],
        items,
    })
}

/// The encodings of one key and its value.
pub(crate) type MapEntry<'a> = (&'a [u8], &'a [u8]);

/// Cuts a msgpack map into the encodings of its keys and values, in order. Errors (never
/// panics) on anything else, on truncated input and on trailing bytes.
pub(crate) fn split_map(bytes: &[u8]) -> Result<Vec<MapEntry<'_>>, String> {
    let (header_len, count) = match bytes.first() {
        Some(&b) if (0x80..=0x8f).contains(&b) => (1, u64::from(b & 0x0f)),
        Some(0xde) => (3, be(bytes, 1, 2)?),
        Some(0xdf) => (5, be(bytes, 1, 4)?),
        Some(&b) => return Err(format!("expected a msgpack map, found type byte {b:#04x}")),
        None => return Err("expected a msgpack map, found no bytes".into()),
    };
    // Every key and value takes at least one byte, which bounds the allocation.
    if count.saturating_mul(2) > (bytes.len() - header_len) as u64 {
        return Err(format!(
            "map claims {count} entries but only {} bytes follow",
            bytes.len() - header_len
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut pos = header_len;
    for _ in 0..count {
        let key_end = skip_value(bytes, pos)?;
        let value_end = skip_value(bytes, key_end)?;
        entries.push((&bytes[pos..key_end], &bytes[key_end..value_end]));
        pos = value_end;
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} bytes follow the map's last entry",
            bytes.len() - pos
        ));
    }
    Ok(entries)
}

/// Big-endian unsigned integer of `len` bytes at `at`.
fn be(bytes: &[u8], at: usize, len: usize) -> Result<u64, String> {
    let slice = bytes
        .get(at..at + len)
        .ok_or_else(|| "truncated msgpack".to_string())?;
    Ok(slice.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Returns the position just past the value starting at `pos`. Iterative, so deeply nested
/// input cannot overflow the stack.
fn skip_value(bytes: &[u8], mut pos: usize) -> Result<usize, String> {
    let truncated = || "truncated msgpack".to_string();
    // Values still to skip, counting the children of containers already entered.
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let b = *bytes.get(pos).ok_or_else(truncated)?;
        // (header bytes, data bytes, child values)
        let (head, data, children): (usize, u64, u64) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * u64::from(b & 0x0f)),
            0x90..=0x9f => (1, 0, u64::from(b & 0x0f)),
            0xa0..=0xbf => (1, u64::from(b & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(bytes, pos + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(bytes, pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(bytes, pos + 1, 4)?, 0),
            0xc7 => (3, be(bytes, pos + 1, 1)?, 0),
            0xc8 => (4, be(bytes, pos + 1, 2)?, 0),
            0xc9 => (6, be(bytes, pos + 1, 4)?, 0),
            0xca => (1, 4, 0),
            0xcb => (1, 8, 0),
            0xcc | 0xd0 => (1, 1, 0),
            0xcd | 0xd1 => (1, 2, 0),
            0xce | 0xd2 => (1, 4, 0),
            0xcf | 0xd3 => (1, 8, 0),
            0xd4 => (2, 1, 0),
            0xd5 => (2, 2, 0),
            0xd6 => (2, 4, 0),
            0xd7 => (2, 8, 0),
            0xd8 => (2, 16, 0),
            0xdc => (3, 0, be(bytes, pos + 1, 2)?),
            0xdd => (5, 0, be(bytes, pos + 1, 4)?),
            0xde => (3, 0, 2 * be(bytes, pos + 1, 2)?),
            0xdf => (5, 0, 2 * be(bytes, pos + 1, 4)?),
            0xc1 => return Err(format!("invalid msgpack type byte 0xc1 at offset {pos}")),
        };
        let end = (pos as u64)
            .checked_add(head as u64)
            .and_then(|p| p.checked_add(data))
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(truncated)?;
        pos = end as usize;
        remaining += children;
        if remaining > (bytes.len() - pos) as u64 {
            return Err(truncated());
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arrays_of_mixed_values_exactly() {
        #[derive(serde::Serialize)]
        struct S {
            a: u32,
            b: Vec<String>,
        }
        let items: Vec<Vec<u8>> = vec![
            rmp_serde::to_vec(&1u8).unwrap(),
            rmp_serde::to_vec(&-300i64).unwrap(),
            rmp_serde::to_vec(&"x".repeat(40)).unwrap(),
            rmp_serde::to_vec(&2.5f64).unwrap(),
            rmp_serde::to_vec_named(&S {
                a: 70000,
                b: vec!["q".into(); 20],
            })
            .unwrap(),
            rmp_serde::to_vec(&()).unwrap(),
            rmp_serde::to_vec(&serde_bytes_like(300)).unwrap(),
        ];
        for n in [0usize, 3, 7, 20, 70_000] {
            let mut bytes = Vec::new();
            protocol::write_array_header(&mut bytes, n);
            for i in 0..n {
                bytes.extend_from_slice(&items[i % items.len()]);
            }
            let split = split_array(&bytes).unwrap();
            assert_eq!(split.items.len(), n);
            for (i, item) in split.items.iter().enumerate() {
                assert_eq!(*item, &items[i % items.len()][..]);
            }
        }
    }

    #[test]
    fn splits_maps_into_keys_and_values() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("a".to_string(), vec![1u32, 2, 3]);
        m.insert("bb".to_string(), vec![]);
        let bytes = rmp_serde::to_vec(&m).unwrap();
        let entries = split_map(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(rmp_serde::from_slice::<String>(entries[0].0).unwrap(), "a");
        assert_eq!(
            rmp_serde::from_slice::<Vec<u32>>(entries[0].1).unwrap(),
            vec![1, 2, 3]
        );
        assert!(split_map(&[0x80]).unwrap().is_empty());
        assert!(split_map(&[0x81, 0xa1]).is_err());
        assert!(split_map(&[0x90]).is_err());
        assert!(split_map(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
        for cut in 0..bytes.len() {
            assert!(split_map(&bytes[..cut]).is_err());
        }
    }

    fn serde_bytes_like(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    #[test]
    fn rejects_non_arrays_truncation_and_garbage_without_panicking() {
        assert!(split_array(b"").is_err());
        assert!(split_array(&[0x01]).is_err());
        assert!(split_array(&[0x92, 0x01]).is_err());
        assert!(split_array(&[0x91, 0x01, 0x02]).is_err());
        assert!(split_array(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(split_array(&[0x91, 0xc1]).is_err());
        assert!(split_array(&[0x91, 0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(split_array(&[0x91, 0xc6, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Deep nesting is walked without recursion.
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert_eq!(split_array(&deep).unwrap().items.len(), 1);
        // Every prefix of a valid array is refused, never a panic.
        let valid = rmp_serde::to_vec(&vec![(1u8, "ab", vec![1.5f32])]).unwrap();
        for cut in 0..valid.len() {
            assert!(split_array(&valid[..cut]).is_err());
        }
    }
}
