//! The UDP and TCP transports in process, over loopback sockets.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::respond::tests::{addrs, query, responder};
use super::{tcp, udp};

const WAIT: Duration = Duration::from_secs(5);

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

async fn read_framed(stream: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).await.unwrap();
    Message::from_vec(&body).unwrap()
}

#[tokio::test]
async fn udp_answers_queries_and_garbage_alike() {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let server = socket.local_addr().unwrap();
    let task = tokio::spawn(udp::serve(socket, Arc::new(responder(None))));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server).await.unwrap();
    let mut buf = vec![0u8; 1500];
    client.send(&[0xde, 0xad, 0x01]).await.unwrap();
    client
        .send(&[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f])
        .await
        .unwrap();
    let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0xbeef, ResponseCode::FormErr)
    );
    let q = query("video.example.cdn.example.", RecordType::A);
    client.send(&q.to_vec().unwrap()).await.unwrap();
    let len = tokio::time::timeout(WAIT, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(addrs(&Message::from_vec(&buf[..len]).unwrap()).len(), 2);
    task.abort();
}

#[tokio::test]
async fn tcp_answers_in_order_and_closes_on_oversized_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let responder = Arc::new(responder(None));
    let stats = responder.stats();
    let task = tokio::spawn(tcp::serve(listener, responder));

    // Two queries in one write: two answers, in order.
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut both = framed(
        &query("video.example.cdn.example.", RecordType::A)
            .to_vec()
            .unwrap(),
    );
    both.extend(framed(
        &query("nobody.cdn.example.", RecordType::A)
            .to_vec()
            .unwrap(),
    ));
    stream.write_all(&both).await.unwrap();
    assert_eq!(addrs(&read_framed(&mut stream).await).len(), 2);
    assert_eq!(
        read_framed(&mut stream).await.metadata.response_code,
        ResponseCode::NXDomain
    );

    // A length over the limit closes the connection without reading on.
    let too_long = u16::try_from(tcp::MAX_QUERY + 1).unwrap().to_be_bytes();
    stream.write_all(&too_long).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // A connection that sends half a length and stalls is cut, but only after the idle
    // timeout; meanwhile others are served.
    let mut stalled = TcpStream::connect(server).await.unwrap();
    stalled.write_all(&[0]).await.unwrap();
    let mut other = TcpStream::connect(server).await.unwrap();
    other
        .write_all(&framed(
            &query("cdn.example.", RecordType::SOA).to_vec().unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(read_framed(&mut other).await.answers.len(), 1);
    let c = stats.counts();
    assert_eq!((c.tcp_connections, c.dropped), (3, 1));
    task.abort();
}
