//! Which partition of the built-in endpoint a device's telemetry lands in.
//!
//! IoT Hub hashes the device id ("For a given device ID, the IoT hub uses a hash of the device
//! ID to determine which partition to store its messages in", MicrosoftDocs
//! `iot-hub-amqp-support.md`, "Receive telemetry messages"). The mapping is the one the C SDK's
//! test listener reproduces to know which single partition to read (Azure/azure-iot-sdk-c
//! `testtools/iothub_test/src/iothubtest.c`, `ResolvePartitionIndex` and `ComputeHash`): the id
//! upper-cased byte by byte, Bob Jenkins' lookup3 `hashlittle2` with both seeds 0, the two
//! halves xor-ed and truncated to a signed 16-bit value, reduced to one of 32,767 logical
//! partitions, and the logical partitions spread over the real ones in contiguous ranges (the
//! first ranges one wider when the count does not divide 32,767).

/// The number of logical partitions IoT Hub's hash spreads over the real ones
/// (`MAX_SHORT_VALUE` in `iothubtest.c`).
const LOGICAL_PARTITIONS: i32 = 32_767;

/// The partition (`0..partition_count`) of telemetry from `device_id`.
///
/// `partition_count` 0 is treated as 1.
pub(crate) fn partition_for(device_id: &str, partition_count: u32) -> u32 {
    let count = i32::try_from(partition_count.max(1)).unwrap_or(i32::MAX);
    let key: Vec<u8> = device_id.bytes().map(|b| b.to_ascii_uppercase()).collect();
    let (hash1, hash2) = lookup3_hashlittle2(&key, 0, 0);
    // Intended truncation: the C code casts the xor to `short`.
    let truncated = (hash1 ^ hash2) as u16 as i16;
    let logical = (i32::from(truncated) % LOGICAL_PARTITIONS).abs();
    let short_width = LOGICAL_PARTITIONS / count;
    if short_width == 0 {
        // More partitions than logical ones: each logical partition is its own.
        return logical as u32;
    }
    let remaining = LOGICAL_PARTITIONS - count * short_width;
    let large_width = short_width + 1;
    let large_span = large_width * remaining;
    let partition = if logical < large_span {
        logical / large_width
    } else {
        remaining + (logical - large_span) / short_width
    };
    partition as u32
}

/// Bob Jenkins' lookup3 `hashlittle2` (public domain, 2006), byte-wise little-endian form:
/// returns `(c, b)` as the C function stores them in `*pc` and `*pb`.
fn lookup3_hashlittle2(key: &[u8], seed_c: u32, seed_b: u32) -> (u32, u32) {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(seed_c);
    let (mut a, mut b, mut c) = (init, init, init.wrapping_add(seed_b));
    let word = |bytes: &[u8]| -> u32 {
        bytes
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &byte)| acc | (u32::from(byte) << (8 * i)))
    };
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return (c, b);
    }
    // The last 1..=12 bytes, zero-padded, go into a, b and c in order.
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    finish(&mut a, &mut b, &mut c);
    (c, b)
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (x, y, z, r) in [
        (0, 2, 1, 4),
        (1, 0, 2, 6),
        (2, 1, 0, 8),
        (0, 2, 1, 16),
        (1, 0, 2, 19),
        (2, 1, 0, 4),
    ] {
        // x -= y; x ^= rot(y, r); y += z  over the rotating roles (a, c, b), (b, a, c), (c, b, a).
        let mut v = [*a, *b, *c];
        v[x] = v[x].wrapping_sub(v[y]) ^ v[y].rotate_left(r);
        v[y] = v[y].wrapping_add(v[z]);
        [*a, *b, *c] = v;
    }
}

fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (x, y, r) in [
        (2, 1, 14),
        (0, 2, 11),
        (1, 0, 25),
        (2, 1, 16),
        (0, 2, 4),
        (1, 0, 14),
        (2, 1, 24),
    ] {
        // x ^= y; x -= rot(y, r)
        let mut v = [*a, *b, *c];
        v[x] = (v[x] ^ v[y]).wrapping_sub(v[y].rotate_left(r));
        [*a, *b, *c] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors from compiling the C SDK test tool's `ResolvePartitionIndex` on x86-64.
    #[test]
    fn matches_the_c_sdk_test_tool() {
        let vectors: [(&str, [u32; 5]); 5] = [
            ("device1", [1, 2, 4, 18, 75]),
            ("myDevice", [0, 0, 1, 6, 24]),
            ("test-device-01", [0, 0, 1, 6, 25]),
            ("a", [0, 1, 2, 9, 37]),
            ("ABCDEFGHIJKLMNOP", [0, 0, 0, 1, 4]),
        ];
        for (device, expected) in vectors {
            let got: Vec<u32> = [2, 4, 8, 32, 128]
                .iter()
                .map(|&n| partition_for(device, n))
                .collect();
            assert_eq!(got, expected, "{device}");
        }
    }

    #[test]
    fn lookup3_known_values() {
        // From lookup3.c's driver5: hashlittle2("", 0, 0) = deadbeef deadbeef and
        // "Four score and seven years ago" with seeds 0/0 = 17770551 ce7226e6.
        assert_eq!(lookup3_hashlittle2(b"", 0, 0), (0xdead_beef, 0xdead_beef));
        assert_eq!(
            lookup3_hashlittle2(b"Four score and seven years ago", 0, 0),
            (0x1777_0551, 0xce72_26e6)
        );
    }

    proptest! {
        #[test]
        fn always_a_valid_partition_and_case_blind(id in "[ -~]{0,80}", n in 1u32..200) {
            let p = partition_for(&id, n);
            prop_assert!(p < n);
            prop_assert_eq!(p, partition_for(&id.to_ascii_lowercase(), n));
        }
    }
}
