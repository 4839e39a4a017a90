package csinode

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"podfs.io/podfs/pkg/redact"
)

// logCalls logs every call with its outcome: publish and unpublish at info,
// the frequent read-only calls (probes, capabilities, stats) at debug,
// failures at warn (the caller's fault) or error (ours). At debug level the
// whole request is logged too, without the fields CSI marks as secrets (a
// nodePublishSecretRef may hold a metadata URL with a password).
func logCalls(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		method := path.Base(info.FullMethod)
		if log.Enabled(ctx, slog.LevelDebug) {
			log.LogAttrs(ctx, slog.LevelDebug, "csi request", slog.String("method", method), slog.String("request", redact.Text(redacted(req))))
		}
		resp, err := handler(ctx, req)
		code := status.Code(err)
		attrs := append([]slog.Attr{
			slog.String("method", method),
			slog.String("code", code.String()),
			slog.Duration("duration", time.Since(start)),
		}, requestAttrs(req)...)
		level := slog.LevelDebug
		switch code {
		case codes.OK:
			if method == "NodePublishVolume" || method == "NodeUnpublishVolume" {
				level = slog.LevelInfo
			}
		case codes.Internal, codes.Unknown, codes.DataLoss:
			level = slog.LevelError
		default:
			level = slog.LevelWarn
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", redact.Text(status.Convert(err).Message())))
		}
		log.LogAttrs(ctx, level, "csi call", attrs...)
		return resp, err
	}
}

// requestAttrs picks the fields that identify what a call was about.
func requestAttrs(req any) []slog.Attr {
	var attrs []slog.Attr
	if r, ok := req.(interface{ GetVolumeId() string }); ok && r.GetVolumeId() != "" {
		attrs = append(attrs, slog.String("volume_id", r.GetVolumeId()))
	}
	if r, ok := req.(interface{ GetTargetPath() string }); ok && r.GetTargetPath() != "" {
		attrs = append(attrs, slog.String("target_path", r.GetTargetPath()))
	}
	if r, ok := req.(interface{ GetVolumePath() string }); ok && r.GetVolumePath() != "" {
		attrs = append(attrs, slog.String("volume_path", r.GetVolumePath()))
	}
	if r, ok := req.(interface{ GetVolumeContext() map[string]string }); ok {
		vc := r.GetVolumeContext()
		if ns, name := vc[ContextPodNamespace], vc[ContextPodName]; name != "" {
			attrs = append(attrs, slog.String("pod", ns+"/"+name))
		}
		if uid := vc[ContextPodUID]; uid != "" {
			attrs = append(attrs, slog.String("pod_uid", uid))
		}
	}
	return attrs
}

// redacted renders a request as JSON without its secret fields.
func redacted(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return fmt.Sprintf("%T", req)
	}
	m = proto.Clone(m)
	stripSecrets(m.ProtoReflect())
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%T (unprintable: %v)", req, err)
	}
	return string(b)
}

// stripSecrets clears every field marked with the csi_secret option, in m and
// in the messages it holds.
func stripSecrets(m protoreflect.Message) {
	var secret []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSecret, _ := proto.GetExtension(fd.Options(), csi.E_CsiSecret).(bool); isSecret {
			secret = append(secret, fd)
			return true
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					stripSecrets(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					stripSecrets(v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			stripSecrets(v.Message())
		}
		return true
	})
	for _, fd := range secret {
		m.Clear(fd)
	}
}
