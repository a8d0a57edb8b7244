package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/agent"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// errHelp is -h: the usage was printed, exit 0.
var errHelp = flag.ErrHelp

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args into fs and rejects positional arguments. Flag errors become usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// hostFlags are the flags of the commands that work on this host: the configuration (with the
// daemon's options for agent run only) plus output and logging.
type hostFlags struct {
	load      func(getenv func(string) string) (config.Config, error)
	output    *string
	logLevel  *string
	logFormat *string
}

func bindHostFlags(fs *flag.FlagSet, daemon bool) hostFlags {
	load := config.HostFlags
	if daemon {
		load = config.Flags
	}
	return hostFlags{
		load:      load(fs),
		output:    fs.String("o", "table", "output format: table or json"),
		logLevel:  fs.String("log-level", "info", "debug, info, warn or error"),
		logFormat: fs.String("log-format", "text", "text or json"),
	}
}

// parse parses args, then validates everything; nothing on the host has been touched yet.
func (h hostFlags) parse(fs *flag.FlagSet, args []string, getenv func(string) string) (config.Config, error) {
	if err := parseFlags(fs, args); err != nil {
		return config.Config{}, err
	}
	if err := validOutput(*h.output); err != nil {
		return config.Config{}, err
	}
	if _, err := parseLevel(*h.logLevel); err != nil {
		return config.Config{}, err
	}
	if *h.logFormat != "text" && *h.logFormat != "json" {
		return config.Config{}, usageError{fmt.Errorf("--log-format: unknown format %q: want text or json", *h.logFormat)}
	}
	cfg, err := h.load(getenv)
	if err != nil {
		return config.Config{}, usageError{err}
	}
	if err := agent.ValidateDisabled(cfg); err != nil {
		return config.Config{}, usageError{err}
	}
	return cfg, nil
}

func (h hostFlags) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(*h.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	if *h.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usageError{fmt.Errorf("--log-level: unknown level %q: want debug, info, warn or error", s)}
	}
	return l, nil
}

func validOutput(s string) error {
	if s != "table" && s != "json" {
		return usageError{fmt.Errorf("-o: unknown output format %q: want table or json", s)}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneLine keeps table cells on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
