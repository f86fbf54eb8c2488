// SPDX-License-Identifier: AGPL-3.0-only
//! What changes a session's footing before login: STLS (RFC 2595) and a
//! SASL exchange (RFC 5034 §4), whose challenges the session carries.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn start_tls(&mut self, ok: Reply) -> Flow {
        let Some(acceptor) = self.services.tls.clone() else {
            Reply::err("TLS is not configured").encode(&mut self.output);
            return Flow::Continue;
        };
        ok.encode(&mut self.output);
        if self.flush().await.is_err() {
            return Flow::Stop(End::IoError);
        }
        // RFC 2595 §4 and the STARTTLS injection class of bugs: whatever the
        // client pipelined after STLS in plaintext is thrown away.
        self.input.clear();
        let Transport::Plain(stream) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return Flow::Stop(End::Closed);
        };
        let handshake = tokio::time::timeout_at(self.wait_until().0, acceptor.accept(stream));
        match handshake.await {
            Ok(Ok(tls)) => {
                tls_facts::learn(&mut self.conn, tls.get_ref().1, &self.services);
                self.io = Transport::Tls(Box::new(tls));
                self.conn.secure = true;
                self.conn.stls_available = false;
                // Forget what was learned before TLS (RFC 2595 §4).
                self.state = State::default();
                Flow::Continue
            }
            Ok(Err(e)) => {
                self.services.metrics.tls_handshake_failures.inc();
                self.services
                    .guard
                    .log()
                    .tls_failed(self.conn.peer.ip(), &e.to_string());
                Flow::Stop(End::TlsFailed)
            }
            Err(_) => {
                self.services.metrics.tls_handshake_failures.inc();
                self.services
                    .guard
                    .log()
                    .tls_failed(self.conn.peer.ip(), "handshake timed out");
                Flow::Stop(End::TlsFailed)
            }
        }
    }

    /// One SASL exchange (RFC 5034 §4): the exchange decides, the session
    /// carries its challenges and answers.
    pub(super) async fn sasl(
        &mut self,
        mech: Box<dyn Mechanism>,
        initial: Option<Vec<u8>>,
    ) -> Flow {
        let mut exchange = Exchange::start(mech, initial);
        let outcome = loop {
            let next = exchange
                .advance(&mut self.state, &self.conn, &self.services, &mut self.stats)
                .await;
            match next {
                Next::Challenge(data) => match self.sasl_round(&data).await {
                    Ok(Round::Answer(answer)) => exchange.answer(answer),
                    Ok(Round::Cancelled) => {
                        self.services.metrics.command("AUTH", false);
                        let outcome = exchange
                            .cancelled(&mut self.state, &self.conn, &self.services)
                            .await;
                        return Box::pin(self.outcome(outcome)).await;
                    }
                    Err(flow) => {
                        // The client went away.
                        self.services.metrics.command("AUTH", false);
                        return flow;
                    }
                },
                Next::Done(outcome) => break outcome,
            }
        };
        self.services
            .metrics
            .command("AUTH", succeeded(&outcome).unwrap_or(false));
        Box::pin(self.outcome(outcome)).await
    }

    /// Send one `+ ` challenge and read the client's answer, decoded
    /// (`None`: not base64, or too long), or its `*`.
    pub(super) async fn sasl_round(&mut self, challenge: &[u8]) -> Result<Round, Flow> {
        Reply::Continue(B64.encode(challenge)).encode(&mut self.output);
        if self.flush().await.is_err() {
            return Err(Flow::Stop(End::IoError));
        }
        let line = loop {
            match self.input.next_line(MAX_SASL_LINE) {
                Some(Line::Complete(l)) => break l,
                Some(Line::TooLong) => return Ok(Round::Answer(None)),
                None => self.fill().await.map_err(Flow::Stop)?,
            }
        };
        if line == b"*" {
            return Ok(Round::Cancelled);
        }
        Ok(Round::Answer(B64.decode(&line).ok()))
    }
}

/// The client's side of one SASL round.
pub(super) enum Round {
    Answer(Option<Vec<u8>>),
    /// `*` (RFC 5034 §4).
    Cancelled,
}
