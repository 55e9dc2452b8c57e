package config

import "github.com/hashicorp/hcl/v2"

// The structs below mirror the HCL file for gohcl. Attributes that need a
// check of their value keep the range of that value, so a diagnostic points
// at it. gohcl rejects attributes and blocks that they do not list.

type fileSchema struct {
	DataDir              string            `hcl:"data_dir"`
	DataDirRange         hcl.Range         `hcl:"data_dir,attr_value_range"`
	Slots                hcl.Expression    `hcl:"slots,optional"`
	LogLevel             *string           `hcl:"log_level,optional"`
	LogLevelRange        hcl.Range         `hcl:"log_level,attr_value_range"`
	Labels               map[string]string `hcl:"labels,optional"`
	LabelsRange          hcl.Range         `hcl:"labels,attr_value_range"`
	ShutdownTimeout      *string           `hcl:"shutdown_timeout,optional"`
	ShutdownTimeoutRange hcl.Range         `hcl:"shutdown_timeout,attr_value_range"`
	DrainTimeout         *string           `hcl:"drain_timeout,optional"`
	DrainTimeoutRange    hcl.Range         `hcl:"drain_timeout,attr_value_range"`
	RestartBase          *string           `hcl:"restart_backoff_base,optional"`
	RestartBaseRange     hcl.Range         `hcl:"restart_backoff_base,attr_value_range"`
	RestartCap           *string           `hcl:"restart_backoff_cap,optional"`
	RestartCapRange      hcl.Range         `hcl:"restart_backoff_cap,attr_value_range"`
	PluginDir            *string           `hcl:"plugin_dir,optional"`
	PluginDirRange       hcl.Range         `hcl:"plugin_dir,attr_value_range"`
	Coordinator          coordinatorBlock  `hcl:"coordinator,block"`
	Plugins              []pluginBlock     `hcl:"plugin,block"`
}

type coordinatorBlock struct {
	URL           string    `hcl:"url"`
	URLRange      hcl.Range `hcl:"url,attr_value_range"`
	WorkerID      string    `hcl:"worker_id"`
	WorkerIDRange hcl.Range `hcl:"worker_id,attr_value_range"`
	Token         *string   `hcl:"token,optional"`
	Secret        *string   `hcl:"secret,optional"`
	SecretRange   hcl.Range `hcl:"secret,attr_value_range"`
	SecretFile    *string   `hcl:"secret_file,optional"`
	SecretFileRng hcl.Range `hcl:"secret_file,attr_value_range"`
	CAFile        *string   `hcl:"ca_file,optional"`
	CAFileRange   hcl.Range `hcl:"ca_file,attr_value_range"`
}

type pluginBlock struct {
	Name              string        `hcl:"name,label"`
	NameRange         hcl.Range     `hcl:"name,label_range"`
	DefRange          hcl.Range     `hcl:",def_range"`
	Kind              string        `hcl:"kind"`
	KindRange         hcl.Range     `hcl:"kind,attr_value_range"`
	Path              *string       `hcl:"path,optional"`
	PathRange         hcl.Range     `hcl:"path,attr_value_range"`
	Args              []string      `hcl:"args,optional"`
	ArgsRange         hcl.Range     `hcl:"args,attr_value_range"`
	Env               []string      `hcl:"env,optional"`
	EnvRange          hcl.Range     `hcl:"env,attr_value_range"`
	SHA256            *string       `hcl:"sha256,optional"`
	SHA256Range       hcl.Range     `hcl:"sha256,attr_value_range"`
	StartTimeout      *string       `hcl:"start_timeout,optional"`
	StartTimeoutRange hcl.Range     `hcl:"start_timeout,attr_value_range"`
	Restart           *restartBlock `hcl:"restart,block"`
	Config            *configBlock  `hcl:"config,block"`
}

type restartBlock struct {
	DefRange         hcl.Range `hcl:",def_range"`
	Policy           *string   `hcl:"policy,optional"`
	PolicyRange      hcl.Range `hcl:"policy,attr_value_range"`
	BackoffBase      *string   `hcl:"backoff_base,optional"`
	BackoffBaseRange hcl.Range `hcl:"backoff_base,attr_value_range"`
	BackoffCap       *string   `hcl:"backoff_cap,optional"`
	BackoffCapRange  hcl.Range `hcl:"backoff_cap,attr_value_range"`
}

type configBlock struct {
	DefRange hcl.Range `hcl:",def_range"`
	Body     hcl.Body  `hcl:",remain"`
}
