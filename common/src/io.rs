//! Small reading helpers shared by the streaming encoders and decoders.

use std::io::Read;

/// Reads until `buf` is full or the input ends; how many bytes were read (fewer than
/// `buf.len()` only at the end of the input).
pub fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
