//! Which connection carries a peer's data path. Each side of a connection
//! sends the other an offer (its UDP port and the session id to put on
//! datagrams for it); the data path starts when the peer's offer arrives.
//! With two routers dialling each other at once, one connection replaces
//! the other while offers are still on their way: an offer that arrives
//! on a connection that is no longer the peer's is refused, or the data
//! path would start with a dead connection's session ids and never pass a
//! heartbeat. Pure: the router asks the mesh which connection is the
//! peer's and acts on what this returns.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use weft_crypto::DataKeys;

use crate::{identity::PeerName, mesh::ConnId};

/// A connection's side of the negotiation, from its handshake on.
#[derive(Clone, Debug)]
pub struct Setup {
    pub peer: PeerName,
    pub remote: IpAddr,
    /// Our end's address, the source of tunnels to the peer.
    pub local: IpAddr,
    pub keys: Option<DataKeys>,
    /// The session id our peer is to put on datagrams for us.
    pub session: u32,
    /// Whether we want its data sealed.
    pub encrypt: bool,
}

/// What we tell the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub session: u32,
    pub encrypt: bool,
}

/// What the peer's offer says: where its datagrams go, the session id to
/// put on them, whether it wants them sealed, and its vxlan port if it has
/// a fast datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerOffer {
    pub udp_port: u16,
    pub session: u32,
    pub encrypt: bool,
    pub vxlan_port: Option<u16>,
    pub vxlan_device_port: Option<u16>,
}

/// A data path to start, now that the peer's offer came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub peer: PeerName,
    /// Where its datagrams go.
    pub addr: SocketAddr,
    pub remote: IpAddr,
    pub local: IpAddr,
    pub send_session: u32,
    pub recv_session: u32,
    /// Set when the data is sealed.
    pub keys: Option<DataKeys>,
}

/// Why an offer is not acted on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("the connection is gone")]
    UnknownConnection,
    #[error("the connection was replaced by a newer one")]
    Replaced,
    #[error("the data path of this connection runs already")]
    AlreadyStarted,
    #[error("the peer wants its data sealed but this connection has no keys")]
    NoKeys,
}

#[derive(Debug, Default)]
pub struct Negotiation {
    setups: HashMap<ConnId, (Setup, bool)>,
}

impl Negotiation {
    /// A connection came up. If it is the peer's connection (`current`),
    /// returns the offer to send on it; a connection the mesh did not
    /// take is forgotten.
    pub fn connected(
        &mut self,
        conn: ConnId,
        setup: Setup,
        current: Option<ConnId>,
    ) -> Option<Offer> {
        if current != Some(conn) {
            return None;
        }
        let offer = Offer {
            session: setup.session,
            encrypt: setup.encrypt,
        };
        self.setups.insert(conn, (setup, false));
        Some(offer)
    }

    /// The peer of a connection still negotiating or carrying data.
    pub fn peer_of(&self, conn: ConnId) -> Option<PeerName> {
        self.setups.get(&conn).map(|(s, _)| s.peer)
    }

    /// The peer's offer arrived on `conn`; `current` is the connection the
    /// mesh holds for that peer now.
    pub fn offered(
        &mut self,
        conn: ConnId,
        current: Option<ConnId>,
        offer: &PeerOffer,
    ) -> Result<Start, Ignored> {
        let (setup, active) = self.setups.get(&conn).ok_or(Ignored::UnknownConnection)?;
        if current != Some(conn) {
            return Err(Ignored::Replaced);
        }
        if *active {
            return Err(Ignored::AlreadyStarted);
        }
        let seal = setup.encrypt || offer.encrypt;
        let keys = if seal {
            Some(setup.keys.clone().ok_or(Ignored::NoKeys)?)
        } else {
            None
        };
        let start = Start {
            peer: setup.peer,
            addr: SocketAddr::new(setup.remote, offer.udp_port),
            remote: setup.remote,
            local: setup.local,
            send_session: offer.session,
            recv_session: setup.session,
            keys,
        };
        // One data path per peer: this connection's.
        for (other, (s, a)) in self.setups.iter_mut() {
            *a = *other == conn || (*a && s.peer != start.peer);
        }
        Ok(start)
    }

    /// The connection ended. Returns its peer if it carried the peer's
    /// data path, which must stop now.
    pub fn closed(&mut self, conn: ConnId) -> Option<PeerName> {
        let (setup, active) = self.setups.remove(&conn)?;
        active.then_some(setup.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(udp_port: u16, session: u32, encrypt: bool) -> PeerOffer {
        PeerOffer {
            udp_port,
            session,
            encrypt,
            vxlan_port: None,
            vxlan_device_port: None,
        }
    }

    fn setup(session: u32) -> Setup {
        Setup {
            peer: PeerName::from_u64(15),
            remote: "192.0.2.15".parse().unwrap(),
            local: "192.0.2.18".parse().unwrap(),
            keys: None,
            session,
            encrypt: false,
        }
    }

    /// Two routers dial each other at once: connection 1 (theirs) comes
    /// up, then 2 (ours) replaces it; the offer sent on 1 arrives late.
    #[test]
    fn a_late_offer_on_a_replaced_connection_is_refused() {
        let mut n = Negotiation::default();
        assert_eq!(
            n.connected(1, setup(111), Some(1)),
            Some(Offer {
                session: 111,
                encrypt: false
            })
        );
        assert!(n.connected(2, setup(222), Some(2)).is_some());
        // The mesh took 2: the late offer on 1 starts nothing.
        assert_eq!(
            n.offered(1, Some(2), &offer(6783, 999, false)),
            Err(Ignored::Replaced)
        );
        // The offer on 2 starts the data path with 2's sessions.
        let start = n.offered(2, Some(2), &offer(6783, 555, false)).unwrap();
        assert_eq!((start.send_session, start.recv_session), (555, 222));
        assert_eq!(start.addr, "192.0.2.15:6783".parse().unwrap());
        // The replaced connection closing stops nothing; the current one
        // closing stops the peer's path.
        assert_eq!(n.closed(1), None);
        assert_eq!(n.closed(2), Some(PeerName::from_u64(15)));
        assert_eq!(
            n.offered(2, Some(2), &offer(6783, 555, false)),
            Err(Ignored::UnknownConnection)
        );
    }

    #[test]
    fn a_connection_the_mesh_refused_makes_no_offer_and_a_start_happens_once() {
        let mut n = Negotiation::default();
        assert_eq!(n.connected(3, setup(1), Some(4)), None);
        assert_eq!(
            n.offered(3, Some(4), &offer(1, 1, false)),
            Err(Ignored::UnknownConnection)
        );
        n.connected(4, setup(2), Some(4));
        assert!(n.offered(4, Some(4), &offer(1, 1, false)).is_ok());
        assert_eq!(
            n.offered(4, Some(4), &offer(1, 1, false)),
            Err(Ignored::AlreadyStarted)
        );
        // Sealing asked for without keys is refused, not started clear.
        let mut n = Negotiation::default();
        n.connected(5, setup(3), Some(5));
        assert_eq!(
            n.offered(5, Some(5), &offer(1, 1, true)),
            Err(Ignored::NoKeys)
        );
    }
}
