//! Calls tonic's client cannot make, written frame by frame with `h2`: uploads cut in the
//! middle of a gRPC message, and messages whose bytes are not the protobuf they claim to be.

use bytes::Bytes;
use prost::Message;
use vocalguard::proto::{screen_request, AudioChunk, ScreenRequest, TrackMetadata};

/// A gRPC length-prefixed message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    raw_frame(&message.encode_to_vec())
}

/// `body` as one gRPC length-prefixed message, whatever its bytes.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body);
    framed
}

/// A POST of gRPC `path` on `addr`.
fn grpc_request(addr: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Calls `path` on `addr` with one message whose bytes are `body`, ends the stream and
/// returns the server's `(grpc-status, grpc-message)`.
pub async fn call_with_raw_message(addr: &str, path: &str, body: &[u8]) -> (i32, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client
        .send_request(grpc_request(addr, path), false)
        .unwrap();
    send.send_data(Bytes::from(raw_frame(body)), true).unwrap();
    status_of_response(response.await.unwrap())
        .await
        .expect("a status")
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
    let request = grpc_request(addr, "/vocalguard.v1.ScreeningService/Screen");
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
    status_of_response(response.await.unwrap()).await
}

/// The `(grpc-status, grpc-message)` of a response, from its headers or its trailers.
async fn status_of_response(response: http::Response<h2::RecvStream>) -> Option<(i32, String)> {
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
