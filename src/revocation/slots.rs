//! Redis Cluster hash slots: which of the 16,384 slots a key lives in
//! (CRC16-XMODEM of the key, or of its `{hash tag}`, modulo 16,384), computed
//! over the key's parts without building it (the verify path asks for three
//! keys per token), and a hash tag that lands in a chosen slot (a heartbeat
//! key must live on the node it proves).

/// How many hash slots a Redis Cluster has.
pub const SLOTS: usize = 16_384;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), the table Redis uses.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: impl Iterator<Item = u8>) -> u16 {
    bytes.fold(0u16, |crc, b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The slot of the key made of `parts` concatenated, with Redis' hash tag
/// rule: if the key has a `{` and, after it, a `}` with at least one byte
/// between, only those bytes are hashed.
pub fn slot_of(parts: &[&[u8]]) -> u16 {
    let bytes = || parts.iter().flat_map(|p| p.iter().copied());
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if let Some(open) = bytes().position(|b| b == b'{')
        && let Some(close) = bytes().skip(open + 1).position(|b| b == b'}')
        && close > 0
    {
        return crc16(bytes().skip(open + 1).take(close)) % SLOTS as u16;
    }
    crc16(bytes().take(len)) % SLOTS as u16
}

/// The slot of a whole key.
pub fn slot_of_key(key: &str) -> u16 {
    slot_of(&[key.as_bytes()])
}

/// A short hash tag whose slot is `slot` (the first such decimal number).
pub fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|n| n.to_string())
        .find(|t| slot_of(&[t.as_bytes()]) == slot)
        .expect("every slot has a decimal tag")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_for_plain_and_tagged_keys() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(slot_of_key("foo"), 12182);
        assert_eq!(slot_of_key("bar"), 5061);
        assert_eq!(slot_of_key("123456789"), 12739);
        assert_eq!(slot_of_key("{user1000}.following"), slot_of_key("user1000"));
        // An empty tag hashes the whole key; only the first `{` counts.
        assert_eq!(slot_of_key("foo{}{bar}"), crc16("foo{}{bar}".bytes()) % SLOTS as u16);
        assert_eq!(slot_of_key("foo{{bar}}zap"), slot_of_key("{bar"));
        assert_eq!(slot_of_key("foo{bar}{zap}"), slot_of_key("bar"));
        // Agrees with fred's own hasher.
        for key in ["revokd:jti:abc", "revokd:sid:{s-1}", "a{b", "}{", "x{y}z"] {
            assert_eq!(slot_of_key(key), fred::util::redis_keyslot(key.as_bytes()), "{key}");
        }
    }

    #[test]
    fn parts_hash_like_the_whole_key() {
        for (parts, whole) in [
            (&["revokd:", "jti:", "abc"][..], "revokd:jti:abc"),
            (&["revokd:", "sid:{", "s-1", "}"][..], "revokd:sid:{s-1}"),
            (&["p{", "", "}x"][..], "p{}x"),
            (&["p", "{a", "b}"][..], "p{ab}"),
        ] {
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            assert_eq!(slot_of(&parts), slot_of_key(whole), "{whole}");
        }
    }

    #[test]
    fn a_tag_lands_in_its_slot() {
        for slot in [0u16, 1, 5460, 5461, 10922, 16383] {
            let tag = tag_for_slot(slot);
            assert_eq!(slot_of_key(&format!("revokd:hb:x:{{{tag}}}123")), slot);
        }
    }
}
