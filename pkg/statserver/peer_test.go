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
	frame := wire.MarshalMessages([]wire.StatMessage{{Key: key, Stat: wire.Stat{PodName: "p", AverageConcurrentRequests: 1, Timestamp: 7}}})
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
