//! What a peer (billing, an SMS aggregator, Kannel) said when it refused a request.
//! Its body goes into a log line and a dead letter's `x-last-error`, so it is read —
//! but only so far: a peer that answers a gigabyte, or drips a body that never ends,
//! costs [`ERROR_BODY_LIMIT`] bytes of memory and no waiting beyond them.

/// Most bytes of an error answer's body read.
pub const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// The body of `response`, read up to [`ERROR_BODY_LIMIT`] bytes (as text; invalid
/// UTF-8 replaced), trimmed, with `…` when it went on. A body that fails halfway
/// gives what came before the failure: the status already said what matters.
pub async fn error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_LIMIT - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    // Dropping the response here closes its connection rather than draining the rest.
    drop(response);
    if truncated {
        // The cut may fall inside a character: drop its first bytes.
        if let Err(e) = std::str::from_utf8(&body)
            && e.error_len().is_none()
        {
            body.truncate(e.valid_up_to());
        }
    }
    let text = String::from_utf8_lossy(&body);
    let mut text = text.trim().to_owned();
    if truncated {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    /// Anything a test waits for (a busy machine's allowance).
    const WAIT: Duration = Duration::from_secs(60);

    async fn answer(status: u16, body: Vec<u8>) -> reqwest::Response {
        let peer = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_bytes(body))
            .expect(1)
            .mount(&peer)
            .await;
        reqwest::Client::new()
            .post(peer.uri())
            .send()
            .await
            .expect("the peer answers")
    }

    #[tokio::test]
    async fn a_huge_error_body_is_read_up_to_the_limit() {
        let mut body = b"quota exceeded: ".to_vec();
        body.resize(4 * 1024 * 1024, b'x');
        let text = error_body(answer(500, body).await).await;
        assert!(text.starts_with("quota exceeded: xxx"), "{}", &text[..40]);
        assert!(text.ends_with('…'));
        assert!(
            text.len() <= ERROR_BODY_LIMIT + '…'.len_utf8(),
            "{} bytes kept",
            text.len()
        );
    }

    #[tokio::test]
    async fn a_short_body_is_kept_whole_and_a_cut_character_dropped() {
        assert_eq!(
            error_body(answer(400, b"  bad account \n".to_vec()).await).await,
            "bad account"
        );
        // "ё" is two bytes: at an odd offset the limit falls inside one.
        let mut body = b"x".to_vec();
        body.extend("ё".repeat(ERROR_BODY_LIMIT).bytes());
        let text = error_body(answer(422, body).await).await;
        assert!(!text.contains('\u{FFFD}'), "no half character");
        assert_eq!(
            text.chars().filter(|c| *c == 'ё').count(),
            (ERROR_BODY_LIMIT - 2) / 2
        );
    }

    /// A peer that sends the start of a 100 MiB body and then nothing: the read
    /// stops at the limit instead of waiting for the rest (the client's own timeout
    /// is set far beyond the test's deadline, so only the limit can end it).
    #[tokio::test]
    async fn a_body_that_never_ends_does_not_hold_the_caller() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
            let head = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 104857600\r\n\r\n";
            socket.write_all(head.as_bytes()).await.expect("head");
            socket
                .write_all(&vec![b'z'; 2 * ERROR_BODY_LIMIT])
                .await
                .expect("body start");
            // Hold the connection open, sending nothing more, until the test ends.
            let _ = released.await;
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("client");
        let response = client
            .post(format!("http://{addr}/"))
            .send()
            .await
            .expect("the peer answers");
        assert_eq!(response.status(), 503);
        let text = tokio::time::timeout(WAIT, error_body(response))
            .await
            .expect("the read stops at the limit");
        assert_eq!(text.len(), ERROR_BODY_LIMIT + '…'.len_utf8());
        let _ = release.send(());
        let _ = peer.await;
    }
}
