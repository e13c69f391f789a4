// Package ping is a gRPC ping service defined without generated code: a hand-written service
// descriptor and a protobuf codec for its two one-field-ish messages. It is wire-compatible with
// Knative's grpc-ping test image (service ping.PingService, Ping and PingStream, messages with
// `string msg = 1`), and adds PingServerStream, a server-streaming method.
package ping

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ServiceName is the fully qualified gRPC service name.
const ServiceName = "ping.PingService"

// Full method names.
const (
	MethodPing             = "/" + ServiceName + "/Ping"
	MethodPingStream       = "/" + ServiceName + "/PingStream"
	MethodPingServerStream = "/" + ServiceName + "/PingServerStream"
)

// MaxServerStreamCount bounds the responses one PingServerStream call produces.
const MaxServerStreamCount = 1000

// Request is `message Request { string msg = 1; int32 count = 2; }` (count is used by PingServerStream).
type Request struct {
	Msg   string
	Count int32
}

// Response is `message Response { string msg = 1; }`.
type Response struct {
	Msg string
}

// Codec is a protobuf codec for Request and Response (and generated messages, such as the health
// service's, which it hands to the protobuf runtime). Its name is "proto", so calls carry the usual
// application/grpc+proto content type and interoperate with generated clients and servers.
type Codec struct{}

// Name implements encoding.Codec.
func (Codec) Name() string { return "proto" }

// Marshal implements encoding.Codec.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *Request:
		b := appendString(nil, 1, m.Msg)
		if m.Count != 0 {
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(int64(m.Count))) // int32 is sign-extended on the wire
		}
		return b, nil
	case *Response:
		return appendString(nil, 1, m.Msg), nil
	case proto.Message:
		return proto.Marshal(m)
	default:
		return nil, fmt.Errorf("ping codec: cannot marshal %T", v)
	}
}

// Unmarshal implements encoding.Codec. Unknown fields are skipped, as protobuf requires.
func (Codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *Request:
		*m = Request{}
		return parse(data, func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
			switch {
			case num == 1 && typ == protowire.BytesType:
				s, n := protowire.ConsumeString(b)
				m.Msg = s
				return n, nil
			case num == 2 && typ == protowire.VarintType:
				x, n := protowire.ConsumeVarint(b)
				m.Count = int32(x)
				return n, nil
			}
			return protowire.ConsumeFieldValue(num, typ, b), nil
		})
	case *Response:
		*m = Response{}
		return parse(data, func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
			if num == 1 && typ == protowire.BytesType {
				s, n := protowire.ConsumeString(b)
				m.Msg = s
				return n, nil
			}
			return protowire.ConsumeFieldValue(num, typ, b), nil
		})
	case proto.Message:
		return proto.Unmarshal(data, m)
	default:
		return fmt.Errorf("ping codec: cannot unmarshal into %T", v)
	}
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// parse walks the fields of a message; field returns how many bytes of the value it consumed, or a
// negative protowire error code.
func parse(b []byte, field func(protowire.Number, protowire.Type, []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("ping codec: %w", protowire.ParseError(n))
		}
		b = b[n:]
		m, err := field(num, typ, b)
		if err != nil {
			return err
		}
		if m < 0 {
			return fmt.Errorf("ping codec: field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil
}

// Server is the ping service's implementation.
type Server interface {
	Ping(ctx context.Context, req *Request) (*Response, error)
	// PingStream answers each request on the stream with one response.
	PingStream(stream grpc.BidiStreamingServer[Request, Response]) error
	// PingServerStream answers one request with Count responses (at most MaxServerStreamCount).
	PingServerStream(req *Request, stream grpc.ServerStreamingServer[Response]) error
}

// ServiceDesc describes the service for grpc.Server.RegisterService.
func ServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*Server)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Ping",
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := new(Request)
				if err := dec(req); err != nil {
					return nil, err
				}
				if icpt == nil {
					return srv.(Server).Ping(ctx, req)
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: MethodPing}
				return icpt(ctx, req, info, func(ctx context.Context, req any) (any, error) {
					return srv.(Server).Ping(ctx, req.(*Request))
				})
			},
		}},
		Streams: []grpc.StreamDesc{
			{
				StreamName:    "PingStream",
				ServerStreams: true,
				ClientStreams: true,
				Handler: func(srv any, stream grpc.ServerStream) error {
					return srv.(Server).PingStream(&grpc.GenericServerStream[Request, Response]{ServerStream: stream})
				},
			},
			{
				StreamName:    "PingServerStream",
				ServerStreams: true,
				Handler: func(srv any, stream grpc.ServerStream) error {
					req := new(Request)
					if err := stream.RecvMsg(req); err != nil {
						return err
					}
					return srv.(Server).PingServerStream(req, &grpc.GenericServerStream[Request, Response]{ServerStream: stream})
				},
			},
		},
		Metadata: "ping.proto",
	}
}

// Register registers impl on s.
func Register(s *grpc.Server, impl Server) { s.RegisterService(ServiceDesc(), impl) }

// Client calls the ping service over conn with the ping codec.
type Client struct{ Conn grpc.ClientConnInterface }

// Ping makes one unary call.
func (c Client) Ping(ctx context.Context, req *Request, opts ...grpc.CallOption) (*Response, error) {
	resp := new(Response)
	opts = append([]grpc.CallOption{grpc.ForceCodec(Codec{})}, opts...)
	if err := c.Conn.Invoke(ctx, MethodPing, req, resp, opts...); err != nil {
		return nil, err
	}
	return resp, nil
}

// PingStream opens a bidirectional stream.
func (c Client) PingStream(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[Request, Response], error) {
	opts = append([]grpc.CallOption{grpc.ForceCodec(Codec{})}, opts...)
	desc := &ServiceDesc().Streams[0]
	s, err := c.Conn.NewStream(ctx, desc, MethodPingStream, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[Request, Response]{ClientStream: s}, nil
}

// PingServerStream sends req and returns every response until the server ends the stream.
func (c Client) PingServerStream(ctx context.Context, req *Request, opts ...grpc.CallOption) ([]*Response, error) {
	opts = append([]grpc.CallOption{grpc.ForceCodec(Codec{})}, opts...)
	desc := &ServiceDesc().Streams[1]
	s, err := c.Conn.NewStream(ctx, desc, MethodPingServerStream, opts...)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	var out []*Response
	for {
		r := new(Response)
		err := s.RecvMsg(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}
