package e2e

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fill is one way of setting every field of a request.
type fill struct {
	name    string
	str     string
	num     int64
	numUint uint64
}

// setAll sets every field of m, down to depth levels of messages, lists
// with one element and maps with one entry.
func setAll(m protoreflect.Message, f fill, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && m.WhichOneof(fd.ContainingOneof()) != nil {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			mp.Set(scalar(fd.MapKey(), f).MapKey(), element(m, fd.MapValue(), f, depth, func() protoreflect.Value { return mp.NewValue() }))
		case fd.IsList():
			l := m.Mutable(fd).List()
			l.Append(element(m, fd, f, depth, l.NewElement))
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				setAll(m.Mutable(fd).Message(), f, depth-1)
			}
		default:
			m.Set(fd, scalar(fd, f))
		}
	}
}

func element(_ protoreflect.Message, fd protoreflect.FieldDescriptor, f fill, depth int, newValue func() protoreflect.Value) protoreflect.Value {
	if fd.Kind() == protoreflect.MessageKind {
		v := newValue()
		if depth > 0 {
			setAll(v.Message(), f, depth-1)
		}
		return v
	}
	return scalar(fd, f)
}

func scalar(fd protoreflect.FieldDescriptor, f fill) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.str)
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(f.str))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(f.num)))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(max(min(f.num, math.MaxInt32), math.MinInt32)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(f.num)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(min(f.numUint, math.MaxUint32)))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(f.numUint)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(f.num))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(f.num))
	}
	panic("unhandled kind " + fd.Kind().String())
}

// Every RPC, sent requests with every field empty, 1 MiB long, holding a
// NUL and a newline, -1 and the largest value: each answer is a clear code
// (never Unknown, never a recovered panic), the daemon stays small, and
// afterwards everything can be removed and nothing is left on the host.
func TestEveryRPCWithHostileFields(t *testing.T) {
	e := newCtrEnv(t)
	before, beforeCtr := countLeaks(t, e.d), countContainerLeaks(t, e.d)
	podID, pod := e.pod(t, "target")
	e.run(t, podID, pod, ctrConfig("target", e.image("plain"), "sleep", "300"))
	pid := e.d.cmd.Process.Pid
	idle := statusKiB(t, pid, "VmRSS")

	fills := []fill{
		{name: "empty", str: "", num: 0},
		{name: "1MiB", str: strings.Repeat("a", 1<<20), num: 1},
		{name: "NUL and newline", str: "a\x00b\nc", num: 2},
		{name: "-1", str: "x", num: -1, numUint: math.MaxUint64},
		{name: "max", str: "x", num: math.MaxInt64, numUint: math.MaxUint64},
	}
	services := runtimeapi.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto.Services()
	calls := 0
	for i := range services.Len() {
		svc := services.Get(i)
		for j := range svc.Methods().Len() {
			md := svc.Methods().Get(j)
			method := "/" + string(svc.FullName()) + "/" + string(md.Name())
			for _, f := range fills {
				req := dynamicpb.NewMessage(md.Input())
				setAll(req, f, 4)
				err := invoke(e.d.conn, md, method, req)
				calls++
				code := status.Code(err)
				if code == codes.Unknown || (code == codes.Internal && strings.Contains(err.Error(), "internal error in")) {
					t.Errorf("%s with fields %s: %v", method, f.name, clipErr(err))
				}
			}
		}
	}
	peak := statusKiB(t, pid, "VmHWM")
	t.Logf("%d calls; daemon RSS idle %.0f KiB, peak %.0f KiB", calls, idle, peak)
	if peak-idle > 256<<10 {
		t.Errorf("the daemon grew from %.0f KiB to %.0f KiB", idle, peak)
	}

	// The pod made for the test, and anything a call made, can go.
	ctx := t.Context()
	list, err := e.d.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}, grpc.MaxCallRecvMsgSize(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.Id != podID {
			t.Errorf("a hostile call made pod %s (%v)", p.Id, p.Metadata)
		}
		removePod(t, e.d, p.Id)
	}
	e.d.removeAllPods()
	if after, afterCtr := countLeaks(t, e.d), countContainerLeaks(t, e.d); after != before || afterCtr != beforeCtr {
		t.Errorf("after removing everything:\npods before %+v after %+v\ncontainers before %+v after %+v", before, after, beforeCtr, afterCtr)
	}
}

func invoke(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, method string, req *dynamicpb.Message) error {
	timeout := 20 * time.Second
	if md.Name() == "GetContainerEvents" {
		// A stream that ends only with the client or the daemon: it
		// answered if it got this far.
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !md.IsStreamingServer() {
		return conn.Invoke(ctx, method, req, dynamicpb.NewMessage(md.Output()))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(dynamicpb.NewMessage(md.Output())); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func clipErr(err error) string {
	s := err.Error()
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
