//! `duplex connect`.

use clap::Args;
use duplex::{ClientOptions, CloseCode, Message};
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `duplex connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// ws:// URL to connect to.
    url: String,
    /// Echo every received message back, until the server closes.
    #[arg(long)]
    echo: bool,
    /// Largest message accepted (bytes).
    #[arg(long, default_value_t = 64 << 20)]
    max_message_size: usize,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
}

/// Exit codes: 0 clean close; 1 could not connect; 2 the connection failed
/// (protocol error or dropped without a closing handshake).
pub async fn run(a: ConnectArgs) -> ExitCode {
    let mut config = duplex::Config::default().with_max_message_size(a.max_message_size);
    if a.no_deflate {
        config = config.with_deflate(None);
    }
    let opts = ClientOptions {
        config,
        ..Default::default()
    };
    let mut ws = match duplex::connect_with(&a.url, opts).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("duplex connect: {}: {e}", a.url);
            return ExitCode::from(1);
        }
    };
    let result = if a.echo {
        echo(&mut ws).await
    } else {
        interactive(&mut ws).await
    };
    match result {
        Ok(()) if ws.was_clean() => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!(
                "duplex connect: connection closed uncleanly (code {})",
                ws.close_code().map_or(1006, |c| c.0)
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("duplex connect: {e}");
            ExitCode::from(2)
        }
    }
}

async fn echo(ws: &mut duplex::WebSocket<duplex::ClientStream>) -> duplex::Result<()> {
    while let Some(m) = ws.recv().await {
        ws.feed(m?).await?;
    }
    Ok(())
}

enum Step {
    Line(std::io::Result<Option<String>>),
    Msg(Option<duplex::Result<Message>>),
}

/// Each stdin line is sent as a text message; each received text message is
/// printed as a line (binary ones as a length note). EOF closes with 1000.
async fn interactive(ws: &mut duplex::WebSocket<duplex::ClientStream>) -> duplex::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let step = tokio::select! {
            l = lines.next_line() => Step::Line(l),
            m = ws.recv() => Step::Msg(m),
        };
        match step {
            Step::Line(Ok(Some(line))) => ws.send(Message::text(line)).await?,
            Step::Line(_) => {
                ws.close(CloseCode::NORMAL, "").await?;
                return Ok(());
            }
            Step::Msg(Some(Ok(Message::Text(t)))) => println!("{t}"),
            Step::Msg(Some(Ok(Message::Binary(b)))) => {
                println!("<binary message, {} bytes>", b.len())
            }
            Step::Msg(Some(Err(e))) => return Err(e),
            Step::Msg(None) => return Ok(()),
        }
    }
}
