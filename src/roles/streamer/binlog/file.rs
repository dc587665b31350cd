//! Binlog files: the 4-byte magic, then events back to back, each sized by
//! its header. The FORMAT_DESCRIPTION event at position 4 says how the rest
//! is laid out (checksums, table id width).

use super::DecodeError;
use super::event::{Checksum, Event, EventBody, FormatDescription, HEADER_LEN, Header, MAX_EVENT};

pub const MAGIC: &[u8; 4] = b"\xfebin";

/// Iterates over a whole file's events with their start positions; stops
/// at the first error (a truncated tail is an error: the file may still be
/// being written, which the caller reports).
pub struct Events<'a> {
    data: &'a [u8],
    pos: usize,
    fde: FormatDescription,
    failed: bool,
}

pub fn events(data: &[u8]) -> Result<Events<'_>, DecodeError> {
    if data.get(..4) != Some(MAGIC) {
        return Err(DecodeError { offset: 0, what: "not a binlog file (no \\xfebin magic)".into() });
    }
    Ok(Events { data, pos: 4, fde: FormatDescription::assumed(Checksum::None), failed: false })
}

impl Iterator for Events<'_> {
    type Item = Result<(u64, Event), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let at = self.pos;
        let fail =
            |e: DecodeError| DecodeError { offset: at + e.offset, what: format!("event at position {at}: {}", e.what) };
        let rest = &self.data[at..];
        let result = Header::read(rest).and_then(|h| {
            let size = h.event_size as usize;
            if !(HEADER_LEN..=MAX_EVENT).contains(&size) || size > rest.len() {
                return Err(DecodeError {
                    offset: 9,
                    what: format!("event of {size} bytes with {} left in the file", rest.len()),
                });
            }
            Event::decode(&rest[..size], &self.fde)
        });
        match result {
            Ok(ev) => {
                if let EventBody::FormatDescription(fde) = &ev.body {
                    self.fde = fde.clone();
                }
                self.pos += ev.header.event_size as usize;
                Some(Ok((at as u64, ev)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(fail(e)))
            }
        }
    }
}
