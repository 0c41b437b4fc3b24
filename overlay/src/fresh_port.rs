//! TCP dials from a fresh local port.
//!
//! libp2p binds a TCP dial to the node's listen port ("port reuse", which NAT hole punching
//! needs and Reef does not do). Two nodes that dial each other at the same moment then ask the
//! kernel for the same pair of ports, and the second `connect` can fail with `EADDRINUSE`,
//! which libp2p-tcp does not retry from another port. On a testnet launch, where nodes find
//! each other all at once, that cost nodes their TCP connections to their seeds. Dialling
//! from an ephemeral port, as any TCP client does, cannot collide that way.

use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use libp2p::core::transport::{
    DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};

/// `T` with every dial from a new local port; listening is unchanged.
pub(crate) struct FreshPort<T>(pub T);

impl<T: Transport + Unpin> Transport for FreshPort<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(
            addr,
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        )
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;
    use libp2p::tcp;

    /// The port of a TCP transport's first listen address, once it reports it.
    async fn listen_port<T: Transport + Unpin>(t: &mut T) -> u16 {
        t.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        loop {
            let event = futures::future::poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await;
            if let TransportEvent::NewAddress { listen_addr, .. } = event {
                return listen_addr
                    .iter()
                    .find_map(|p| match p {
                        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                        _ => None,
                    })
                    .unwrap();
            }
        }
    }

    /// The source port of a dial that asks to reuse the listen port, as the server sees it.
    async fn source_port_of_a_dial<T: Transport + Unpin>(mut t: T) -> (u16, u16)
    where
        T::Error: std::fmt::Debug,
    {
        let listen = listen_port(&mut t).await;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", server.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let opts = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let dial = t.dial(to, opts).unwrap();
        let (dialled, accepted) = tokio::join!(dial, server.accept());
        dialled.unwrap();
        (listen, accepted.unwrap().1.port())
    }

    #[tokio::test]
    async fn dials_leave_from_a_fresh_port_not_the_listen_port() {
        let plain = tcp::tokio::Transport::new(tcp::Config::default());
        let (listen, source) = source_port_of_a_dial(plain).await;
        // What the wrapper is for: libp2p alone dials from its listen port.
        assert_eq!(source, listen);
        let fresh = FreshPort(tcp::tokio::Transport::new(tcp::Config::default()));
        let (listen, source) = source_port_of_a_dial(fresh).await;
        assert_ne!(source, listen);
    }
}
