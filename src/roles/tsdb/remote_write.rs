//! Prometheus remote_write 1.0 receiver: a snappy-compressed (block format)
//! protobuf `WriteRequest`, as Prometheus, Grafana Agent and vmagent send it.
//! The messages are declared here with prost; only the fields remote_write
//! 1.0 defines are read, unknown fields are skipped as protobuf requires.

use prost::Message;

use super::storage::{Incoming, Labels};

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a body could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("decompressed body is {0} bytes, over the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Samples, and (series index, reason) for each refused series.
pub type Decoded = (Vec<Incoming>, Vec<(usize, String)>);

/// Decodes a request body into samples. A series with invalid labels is
/// reported by its index (1-based, like lines) and skipped; the rest are kept.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<Decoded, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > max_decoded {
        return Err(DecodeError::TooLarge(len, max_decoded));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    let req = WriteRequest::decode(raw.as_slice())?;
    let mut samples = Vec::new();
    let mut rejected = Vec::new();
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        let labels = match Labels::new(ts.labels.into_iter().map(|l| (l.name, l.value)).collect()) {
            Ok(l) => l,
            Err(e) => {
                rejected.push((i + 1, format!("series {}: {e}", i + 1)));
                continue;
            }
        };
        for s in ts.samples {
            samples.push(Incoming { labels: labels.clone(), t: s.timestamp, v: s.value, line: i + 1 });
        }
    }
    Ok((samples, rejected))
}

/// Encodes a request (for tests, benchmarks and the forwarder).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: "up".into() },
                        Label { name: "job".into(), value: "n".into() },
                    ],
                    samples: vec![Sample { value: 1.0, timestamp: 1000 }, Sample { value: f64::NAN, timestamp: 2000 }],
                },
                TimeSeries {
                    labels: vec![Label { name: "job".into(), value: "no-name".into() }],
                    samples: vec![Sample { value: 1.0, timestamp: 1 }],
                },
            ],
        }
    }

    #[test]
    fn decodes_samples_and_reports_bad_series() {
        let (samples, rejected) = decode(&encode(&request()), 1 << 20).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels.to_string(), "up{job=\"n\"}");
        assert!(samples[1].v.is_nan());
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].1.contains("series 2") && rejected[0].1.contains("__name__"), "{:?}", rejected);
    }

    #[test]
    fn hostile_bodies_are_refused() {
        assert!(matches!(decode(b"definitely not snappy", 1 << 20), Err(DecodeError::Snappy(_))));
        assert!(matches!(decode(&encode(&request()), 10), Err(DecodeError::TooLarge(..))));
        let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(decode(&garbage, 1 << 20), Err(DecodeError::Protobuf(_))));
        // A length header claiming 4 GiB is refused before allocating.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1 << 20).is_err());
    }
}
