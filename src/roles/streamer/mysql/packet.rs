//! MySQL protocol packets: a 3-byte length and a sequence number before
//! each payload; payloads of 16 MiB − 1 or more continue in the next packet.
//! Reads are bounded (a server cannot make the streamer allocate more than
//! `MAX_PAYLOAD`) and a sequence number out of order is an error.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHUNK: usize = 0xff_ffff;
/// The largest payload accepted (MySQL's max_allowed_packet ceiling).
pub const MAX_PAYLOAD: usize = 1 << 30;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Packets {
    io: Box<dyn Io>,
    seq: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet sequence {got}, expected {want}")]
    Sequence { got: u8, want: u8 },
    #[error("packet of more than {MAX_PAYLOAD} bytes")]
    TooLarge,
}

impl Packets {
    pub fn new(io: Box<dyn Io>) -> Packets {
        Packets { io, seq: 0 }
    }

    /// The socket, to wrap in TLS after the SSL request.
    pub fn into_inner(self) -> (Box<dyn Io>, u8) {
        (self.io, self.seq)
    }

    pub fn with_seq(io: Box<dyn Io>, seq: u8) -> Packets {
        Packets { io, seq }
    }

    /// A new command starts a new sequence.
    pub fn reset(&mut self) {
        self.seq = 0;
    }

    pub async fn read(&mut self) -> Result<Vec<u8>, PacketError> {
        let mut out = Vec::new();
        loop {
            let mut head = [0u8; 4];
            self.io.read_exact(&mut head).await?;
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            if head[3] != self.seq {
                return Err(PacketError::Sequence { got: head[3], want: self.seq });
            }
            self.seq = self.seq.wrapping_add(1);
            if out.len() + len > MAX_PAYLOAD {
                return Err(PacketError::TooLarge);
            }
            let start = out.len();
            out.resize(start + len, 0);
            self.io.read_exact(&mut out[start..]).await?;
            if len < CHUNK {
                return Ok(out);
            }
        }
    }

    pub async fn write(&mut self, payload: &[u8]) -> Result<(), PacketError> {
        let mut buf = Vec::with_capacity(payload.len() + 4);
        let mut rest = payload;
        loop {
            let n = rest.len().min(CHUNK);
            buf.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            buf.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < CHUNK {
                break;
            }
        }
        self.io.write_all(&buf).await?;
        self.io.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_payloads_split_and_join_and_sequence_errors_are_caught() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (mut w, mut r) = (Packets::new(Box::new(a)), Packets::new(Box::new(b)));
        let big = vec![7u8; CHUNK + 10];
        let writer = tokio::spawn(async move {
            w.write(&big).await.unwrap();
            w.write(b"next").await.unwrap();
            w
        });
        assert_eq!(r.read().await.unwrap().len(), CHUNK + 10);
        assert_eq!(r.read().await.unwrap(), b"next");
        let mut w = writer.await.unwrap();
        w.reset();
        w.write(b"out of order").await.unwrap();
        assert!(matches!(r.read().await, Err(PacketError::Sequence { got: 0, want: 3 })));
    }
}
