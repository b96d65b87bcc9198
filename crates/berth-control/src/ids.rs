use rand::RngCore;

/// 32 lowercase hex characters from the OS RNG (Azure's `.ft-<hex>`, operation ids).
pub fn new_hex_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret: 256 bits, hex.
pub(crate) fn new_secret() -> String {
    format!("{}{}", new_hex_id(), new_hex_id())
}
