// SPDX-License-Identifier: AGPL-3.0-only
//! Dovecot's stored `{CRAM-MD5}` form: the MD5 chaining state after the
//! HMAC inner and outer pad blocks (RFC 2104), so CRAM-MD5 (RFC 2195) can be
//! answered without the plaintext. The md-5 crate does not expose its
//! compression function, so the block function lives here.

/// MD5 chaining state: four words.
pub type Md5State = [u32; 4];

const INIT: Md5State = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

fn constants() -> [u32; 64] {
    // RFC 1321 §3.4: T[i] = floor(2^32 * |sin(i + 1)|).
    let mut k = [0u32; 64];
    for (i, v) in k.iter_mut().enumerate() {
        *v = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32;
    }
    k
}

/// One MD5 compression over a 64-byte block (RFC 1321 §3.4).
pub fn compress(state: &mut Md5State, block: &[u8; 64]) {
    let k = constants();
    let mut m = [0u32; 16];
    for (i, w) in m.iter_mut().enumerate() {
        *w = u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let s = SHIFTS[(i / 16) * 4 + i % 4];
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(k[i])
            .wrapping_add(m[g])
            .rotate_left(s);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Finish an MD5 computation that started from `state` after
/// `prefix_len` bytes (a multiple of 64) and continues over `data`.
pub fn finish(mut state: Md5State, prefix_len: u64, data: &[u8]) -> [u8; 16] {
    let total = prefix_len + data.len() as u64;
    let mut tail = data.to_vec();
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&(total * 8).to_le_bytes());
    for block in tail.chunks_exact(64) {
        compress(&mut state, block.try_into().expect("64-byte block"));
    }
    let mut out = [0u8; 16];
    for (i, w) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The HMAC-MD5 inner and outer states for a secret, as Dovecot stores them.
pub fn contexts(secret: &[u8]) -> (Md5State, Md5State) {
    use md5::Digest;
    let mut key = [0u8; 64];
    if secret.len() > 64 {
        key[..16].copy_from_slice(&md5::Md5::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| {
        let mut block = [0u8; 64];
        for (b, k) in block.iter_mut().zip(key.iter()) {
            *b = k ^ byte;
        }
        let mut state = INIT;
        compress(&mut state, &block);
        state
    };
    (pad(0x36), pad(0x5c))
}

/// Dovecot's hex encoding: the outer state, then the inner one, each word
/// little-endian.
pub fn encode(inner: &Md5State, outer: &Md5State) -> String {
    let bytes: Vec<u8> = outer
        .iter()
        .chain(inner.iter())
        .flat_map(|w| w.to_le_bytes())
        .collect();
    crate::hex::encode(&bytes)
}

/// Parse the 64 hex digits back into the (inner, outer) states.
pub fn decode(hex: &str) -> Option<(Md5State, Md5State)> {
    let bytes = crate::hex::decode::<32>(hex)?;
    let mut words = [0u32; 8];
    for (w, le) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([le[0], le[1], le[2], le[3]]);
    }
    Some((
        [words[4], words[5], words[6], words[7]],
        [words[0], words[1], words[2], words[3]],
    ))
}

/// HMAC-MD5(secret, message) from the stored states.
pub fn hmac(inner: &Md5State, outer: &Md5State, message: &[u8]) -> [u8; 16] {
    let inner_digest = finish(*inner, 64, message);
    finish(*outer, 64, &inner_digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    #[test]
    fn block_function_matches_md5() {
        for len in [0usize, 1, 55, 56, 63, 64, 65, 200] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(
                finish(INIT, 0, &data).as_slice(),
                md5::Md5::digest(&data).as_slice()
            );
        }
    }

    #[test]
    fn rfc2195_example() {
        // RFC 2195 §2: secret "tanstaaftanstaaf".
        let (i, o) = contexts(b"tanstaaftanstaaf");
        let mac = hmac(&i, &o, b"<1896.697170952@postoffice.reston.mci.net>");
        assert_eq!(crate::hex::encode(&mac), "b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(decode(&encode(&i, &o)), Some((i, o)));
    }
}
