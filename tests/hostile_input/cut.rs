//! Uploads cut in the middle of a gRPC message, written frame by frame with `h2`: tonic's
//! client only sends whole messages.

use bytes::Bytes;
use prost::Message;
use vocalguard::proto::{screen_request, AudioChunk, ScreenRequest, TrackMetadata};

/// A gRPC length-prefixed message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// Opens a `Screen` call to `addr`, sends `meta` and the first `sent` bytes of a framed
/// 64 KiB chunk message. With `end_stream`, the client then ends the stream and the server's
/// `(grpc-status, grpc-message)` is returned; otherwise the connection is dropped at once and
/// `None` is returned.
pub async fn screen_cut_mid_chunk(
    addr: &str,
    meta: TrackMetadata,
    sent: usize,
    end_stream: bool,
) -> Option<(i32, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/vocalguard.v1.ScreeningService/Screen"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let metadata = ScreenRequest {
        part: Some(screen_request::Part::Metadata(meta)),
    };
    send.send_data(Bytes::from(grpc_frame(&metadata)), false)
        .unwrap();
    let chunk = ScreenRequest {
        part: Some(screen_request::Part::Chunk(AudioChunk {
            data: vec![0x55; 64 * 1024],
        })),
    };
    let mut framed = grpc_frame(&chunk);
    framed.truncate(sent);
    send.send_data(Bytes::from(framed), end_stream).unwrap();
    if !end_stream {
        // Let the bytes leave, then drop the connection mid-message.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop((send, response, client));
        connection.abort();
        return None;
    }
    let response = response.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let status_of = |headers: &http::HeaderMap| {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = percent_decode(
            headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .unwrap_or_default(),
        );
        Some((code, message))
    };
    if let Some(status) = status_of(&parts.headers) {
        return Some(status);
    }
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    status_of(&trailers)
}

/// Undoes the percent-encoding of a `grpc-message`.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
