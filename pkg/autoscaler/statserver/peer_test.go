package statserver

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// A connection that asks for the peer subprotocol gets it and its stats go to PeerOut; one that asks
// for nothing (an activator, upstream's forwarder) or for another subprotocol goes to out.
func TestPeerSubprotocol(t *testing.T) {
	peer := make(chan wire.StatMessage, 4)
	h := start(t, Options{PeerSubprotocol: "thaw-peer.v1", PeerOut: peer}, 4)
	key := types.NamespacedName{Namespace: "ns", Name: "rev"}
	frame := wire.MarshalMessages([]wire.StatMessage{{Key: key, Stat: wire.Stat{PodName: "p", AverageConcurrentRequests: 1, Timestamp: epoch.Unix() - 7}}})
	for _, tc := range []struct {
		name    string
		proto   []string
		want    string
		viaPeer bool
	}{
		{"activator", nil, "", false},
		{"other subprotocol", []string{"something"}, "", false},
		{"peer", []string{"thaw-peer.v1"}, "thaw-peer.v1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.proto}
			c, _, err := d.Dial("ws://"+h.addr+"/", http.Header{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.Subprotocol(); got != tc.want {
				t.Fatalf("subprotocol = %q, want %q", got, tc.want)
			}
			send(t, c, websocket.BinaryMessage, frame)
			main, other := h.out, peer
			if tc.viaPeer {
				main, other = peer, h.out
			}
			select {
			case m := <-main:
				if m.Key != key {
					t.Fatalf("key = %v", m.Key)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no stat delivered")
			}
			select {
			case m := <-other:
				t.Fatalf("stat also delivered on the other channel: %+v", m)
			default:
			}
		})
	}
}

// A connection asking to be a peer from an address that is not a replica is refused and counted; the
// same address without the subprotocol (an activator) is served as always.
func TestUnknownPeerRefused(t *testing.T) {
	peer := make(chan wire.StatMessage, 4)
	h := start(t, Options{PeerSubprotocol: "thaw-peer.v1", PeerOut: peer,
		PeerAllowed: func(ip string) bool { return ip == "192.0.2.1" }}, 4)
	d := websocket.Dialer{Subprotocols: []string{"thaw-peer.v1"}}
	_, resp, err := d.Dial("ws://"+h.addr+"/", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("peer from 127.0.0.1: err %v, response %+v; want 403", err, resp)
	}
	if got := h.dropped(ReasonUnknownPeer); got != 1 {
		t.Fatalf("unknown_peer drops = %v", got)
	}
	c := h.dial(t, "/", nil)
	key := types.NamespacedName{Namespace: "ns", Name: "rev"}
	send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: key, Stat: wire.Stat{AverageConcurrentRequests: 1}}}))
	if m := h.next(t); m.Key != key {
		t.Fatalf("activator stat: %+v", m)
	}
}
