package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The nfnetlink_queue protocol (linux/netfilter/nfnetlink_queue.h), only the part a delayer needs:
// bind a queue, ask for the packets' metadata only, set the kernel's queue length and fail-open, read
// packet IDs, send verdicts.
const (
	subsysQueue = 3 // NFNL_SUBSYS_QUEUE

	msgPacket  = 0 // NFQNL_MSG_PACKET
	msgVerdict = 1 // NFQNL_MSG_VERDICT
	msgConfig  = 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1 // NFQA_PACKET_HDR
	attrVerdictHdr = 2 // NFQA_VERDICT_HDR

	cfgCmd      = 1 // NFQA_CFG_CMD
	cfgParams   = 2 // NFQA_CFG_PARAMS
	cfgQueueMax = 3 // NFQA_CFG_QUEUE_MAXLEN
	cfgMask     = 4 // NFQA_CFG_MASK
	cfgFlags    = 5 // NFQA_CFG_FLAGS

	cmdBind   = 1      // NFQNL_CFG_CMD_BIND
	copyMeta  = 1      // NFQNL_COPY_META: no payload, the delayer never reads it
	nfAccept  = 1      // NF_ACCEPT
	flagOpen  = 1 << 0 // NFQA_CFG_F_FAIL_OPEN: a full kernel queue accepts instead of dropping
	flagGSO   = 1 << 2 // NFQA_CFG_F_GSO: no segmentation for us, the payload is not read
	nfgenSize = 4      // struct nfgenmsg
)

func msgType(m uint16) netlink.HeaderType { return netlink.HeaderType(subsysQueue<<8 | m) }

// nfgen is struct nfgenmsg: family, version 0, the queue number in network order.
func nfgen(queue uint16) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], queue)
	return b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// configMessages binds queue num, asks for metadata only, and sets the kernel's queue length with
// fail-open, so packets past it are accepted by the kernel rather than dropped.
func configMessages(num uint16, maxLen uint32) ([]netlink.Message, error) {
	var msgs []netlink.Message
	add := func(enc func(*netlink.AttributeEncoder)) error {
		ae := netlink.NewAttributeEncoder()
		enc(ae)
		b, err := ae.Encode()
		if err != nil {
			return err
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{Type: msgType(msgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(nfgen(num), b...),
		})
		return nil
	}
	err := errors.Join(
		// struct nfqnl_msg_config_cmd: command, pad, pf (ignored by kernels since 3.8).
		add(func(ae *netlink.AttributeEncoder) { ae.Bytes(cfgCmd, []byte{cmdBind, 0, 0, unix.AF_INET}) }),
		add(func(ae *netlink.AttributeEncoder) {
			// struct nfqnl_msg_config_params (packed): copy_range, copy_mode.
			ae.Bytes(cfgParams, append(be32(0), copyMeta))
			ae.Bytes(cfgQueueMax, be32(maxLen))
			ae.Bytes(cfgFlags, be32(flagOpen|flagGSO))
			ae.Bytes(cfgMask, be32(flagOpen|flagGSO))
		}),
	)
	return msgs, err
}

// verdictMessage accepts packet id of queue num.
func verdictMessage(num uint16, id uint32) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(attrVerdictHdr, append(be32(nfAccept), be32(id)...))
	b, _ := ae.Encode() // one fixed-size attribute: cannot fail
	return netlink.Message{Header: netlink.Header{Type: msgType(msgVerdict), Flags: netlink.Request}, Data: append(nfgen(num), b...)}
}

// packetID reads the ID of a queued packet; ok is false for any other message.
func packetID(m netlink.Message) (id uint32, ok bool, err error) {
	if m.Header.Type != msgType(msgPacket) {
		return 0, false, nil
	}
	if len(m.Data) < nfgenSize {
		return 0, false, fmt.Errorf("nfqueue: packet message of %d bytes", len(m.Data))
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[nfgenSize:])
	if err != nil {
		return 0, false, err
	}
	for ad.Next() {
		if ad.Type() == attrPacketHdr {
			b := ad.Bytes()
			if len(b) < 4 {
				return 0, false, fmt.Errorf("nfqueue: packet header of %d bytes", len(b))
			}
			return binary.BigEndian.Uint32(b), true, nil
		}
	}
	if err := ad.Err(); err != nil {
		return 0, false, err
	}
	return 0, false, errors.New("nfqueue: packet message without a packet header")
}

// nlConn is a bound queue on a netlink socket.
type nlConn struct {
	c   *netlink.Conn
	num uint16
}

// dial binds queue num in the network namespace at nsPath ("" for the caller's). The socket is
// created in that namespace (netlink sockets belong to the namespace of the thread that creates
// them; the netlink package enters it on a locked thread of its own) and stays there.
func dial(nsPath string, num uint16, maxLen uint32) (*nlConn, error) {
	cfg := &netlink.Config{}
	if nsPath != "" {
		f, err := os.Open(nsPath)
		if err != nil {
			return nil, fmt.Errorf("nfqueue: network namespace: %w", err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nfqueue: netlink socket in %s: %w", nsPath, err)
	}
	msgs, err := configMessages(num, maxLen)
	if err != nil {
		c.Close()
		return nil, err
	}
	for _, m := range msgs {
		if _, err := c.Execute(m); err != nil {
			c.Close()
			return nil, fmt.Errorf("nfqueue: binding queue %d in %s (is nfnetlink_queue in the kernel?): %w", num, nsPath, err)
		}
	}
	// A socket buffer that overflows must not end the reader: the kernel accepts what it cannot
	// deliver (fail-open) and the reader goes on.
	_ = c.SetOption(netlink.NoENOBUFS, true)
	_ = c.SetReadBuffer(4 << 20)
	return &nlConn{c: c, num: num}, nil
}

// receive reads one datagram and calls fn with the ID of each queued packet in it. An error
// message (a verdict the kernel refused) or an unreadable message is returned after the packets
// before it were handed over.
func (n *nlConn) receive(fn func(id uint32)) error {
	for m, err := range n.c.ReceiveIter() {
		if err != nil {
			return err
		}
		id, ok, err := packetID(m)
		if err != nil {
			return err
		}
		if ok {
			fn(id)
		}
	}
	return nil
}

func (n *nlConn) accept(id uint32) error {
	_, err := n.c.Send(verdictMessage(n.num, id))
	return err
}

func (n *nlConn) close() error { return n.c.Close() }
