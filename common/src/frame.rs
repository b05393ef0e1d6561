//! Length-prefixed frames carrying one encoded message each.
//!
//! A frame is a fixed 10-byte header — the magic `USTD`, the protocol version (u16, big
//! endian) and the payload length (u32, big endian) — followed by the payload. The header
//! layout never changes between versions, so any peer can read another version's header and
//! refuse it by name instead of misparsing it. Lengths over the reader's cap are refused
//! before the payload is read.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, CodecError};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"USTD";
/// Size of the fixed header.
pub const HEADER_LEN: usize = 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended cleanly between frames.
    #[error("stream closed by peer")]
    Closed,
    /// The first bytes are not the understudy magic.
    #[error("not an understudy frame (magic {found:02x?})")]
    BadMagic {
        /// The four bytes found instead.
        found: [u8; 4],
    },
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {got}; this side speaks version {supported}")]
    UnsupportedVersion {
        /// Version in the peer's frame.
        got: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The frame is larger than the reader accepts.
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// Length announced in the header.
        len: u32,
        /// The reader's cap.
        cap: u32,
    },
    /// The payload is not a valid message.
    #[error("malformed payload: {0}")]
    Payload(#[from] CodecError),
}

/// Encodes `msg` into a complete frame of protocol `version`.
pub fn encode_frame<T: Serialize>(version: u16, msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = codec::encode(msg)?;
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: u32::MAX,
        cap: u32::MAX,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, version: u16, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode_frame(version, msg)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Parses a frame header, checking magic, version and cap. Returns the payload length.
pub fn parse_header(header: &[u8; HEADER_LEN], version: u16, cap: u32) -> Result<u32, FrameError> {
    let mut found = [0u8; 4];
    found.copy_from_slice(&header[..4]);
    if found != MAGIC {
        return Err(FrameError::BadMagic { found });
    }
    let got = u16::from_be_bytes([header[4], header[5]]);
    if got != version {
        return Err(FrameError::UnsupportedVersion {
            got,
            supported: version,
        });
    }
    let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    Ok(len)
}

/// Reads one frame of protocol `version` whose payload is at most `cap` bytes.
///
/// Returns [`FrameError::Closed`] when the stream ends cleanly before a new frame starts.
pub async fn read_frame<R, T>(r: &mut R, version: u16, cap: u32) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Err(FrameError::Closed)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
            };
        }
        filled += n;
    }
    let len = parse_header(&header, version, cap)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok(codec::decode(&payload, cap as usize)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let bytes = encode_frame(1, &String::from("hello")).unwrap();
        let got: String = read_frame(&mut bytes.as_slice(), 1, 1024).await.unwrap();
        assert_eq!(got, "hello");
    }

    #[tokio::test]
    async fn other_version_is_refused_by_number() {
        let bytes = encode_frame(9, &1u8).unwrap();
        let err = read_frame::<_, u8>(&mut bytes.as_slice(), 1, 1024)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::UnsupportedVersion {
                got: 9,
                supported: 1
            }
        ));
        assert!(err.to_string().contains("version 9"));
    }

    #[tokio::test]
    async fn oversized_frame_refused_before_reading_payload() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&(u32::MAX).to_be_bytes());
        let err = read_frame::<_, u8>(&mut bytes.as_slice(), 1, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn garbage_is_bad_magic_and_clean_end_is_closed() {
        let garbage = b"GET / HTTP/1.1\r\n".to_vec();
        let err = read_frame::<_, u8>(&mut garbage.as_slice(), 1, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::BadMagic { .. }));
        let empty: &[u8] = &[];
        let err = read_frame::<_, u8>(&mut &*empty, 1, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }
}
