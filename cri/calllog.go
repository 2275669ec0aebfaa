package cri

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/cri/validate"
)

// callLog logs each CRI call once, as a gRPC stats handler rather than an
// interceptor: it sees how the call really ended, also when gRPC itself
// failed it (an answer or request past the 16 MiB limit is
// ResourceExhausted from gRPC, after or before the handler).
type callLog struct{}

type callKey struct{}

type call struct {
	method string
	start  time.Time
	object string
}

func (callLog) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, callKey{}, &call{method: info.FullMethodName, start: time.Now()})
}

func (callLog) HandleRPC(ctx context.Context, s stats.RPCStats) {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return
	}
	switch s := s.(type) {
	case *stats.InPayload:
		if m, ok := s.Payload.(proto.Message); ok && c.object == "" {
			c.object = objectOf(m)
		}
	case *stats.End:
		logCall(c, s.Error)
	}
}

func (callLog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (callLog) HandleConn(context.Context, stats.ConnStats)                       {}

// logCall logs the method, the code and the object the call was about,
// never the request itself: requests can carry registry credentials.
func logCall(c *call, err error) {
	d := time.Since(c.start)
	if err == nil {
		klog.V(4).InfoS("CRI call", "method", c.method, "object", c.object, "duration", d)
		return
	}
	code := status.Code(err)
	switch code {
	case codes.NotFound, codes.AlreadyExists:
		klog.V(2).InfoS("CRI call failed", "method", c.method, "object", c.object, "duration", d, "code", code, "err", err)
	case codes.Unimplemented:
		klog.InfoS("CRI call of an RPC husk does not implement", "method", c.method, "code", code)
	default:
		klog.ErrorS(err, "CRI call failed", "method", c.method, "object", c.object, "duration", d, "code", code)
	}
}

// objectOf names what a request is about: the pod or container id, the
// image, or the metadata of what it makes. Only these fields are read
// (never auth), each cut short (validate.Clip).
func objectOf(m proto.Message) string {
	r := m.ProtoReflect()
	for _, name := range []protoreflect.Name{"container_id", "pod_sandbox_id"} {
		if v := stringField(r, name); v != "" {
			return validate.Clip(v)
		}
	}
	if img := messageField(r, "image"); img != nil {
		if v := stringField(img, "image"); v != "" {
			return validate.Clip(v)
		}
	}
	if md := messageField(messageField(r, "config"), "metadata"); md != nil {
		ns, name := stringField(md, "namespace"), stringField(md, "name")
		if ns != "" {
			return validate.Clip(ns + "/" + name)
		}
		return validate.Clip(name)
	}
	return ""
}

func stringField(m protoreflect.Message, name protoreflect.Name) string {
	if m == nil {
		return ""
	}
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return ""
	}
	return m.Get(fd).String()
}

func messageField(m protoreflect.Message, name protoreflect.Name) protoreflect.Message {
	if m == nil {
		return nil
	}
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message()
}
