import type { EngineHostInfo } from '../oci/platform.js';

/** The fields of `GET /images/{name}/json` wharf reads. */
export interface ImageInspect {
  Id: string;
  RepoTags: string[] | null;
  /** `name@sha256:...`; missing or null on images that were built, loaded or imported. */
  RepoDigests?: string[] | null;
  Created: string;
  Size: number;
  Os: string;
  Architecture: string;
  Variant?: string;
  OsVersion?: string;
  Metadata?: { LastTagTime?: string };
}

/** The fields of an entry of `GET /images/json` wharf reads. */
export interface ImageSummary {
  Id: string;
  RepoTags: string[] | null;
  RepoDigests: string[] | null;
  /** Seconds since the epoch. */
  Created: number;
  Size: number;
  /** Containers using the image; -1 when the engine did not count them. */
  Containers: number;
}

export interface ContainerSummary {
  Id: string;
  ImageID: string;
  /** Seconds since the epoch. */
  Created: number;
  State: string;
}

export interface EngineInfo extends EngineHostInfo {
  DockerRootDir?: string;
  ServerVersion?: string;
}

export interface EngineVersion {
  Os: string;
  Arch: string;
  Version: string;
  ApiVersion: string;
  /** The oldest API version the engine accepts (API 1.25 and later say). */
  MinAPIVersion?: string;
}

/** One layer's state as the pull stream last told it. */
export interface LayerProgress {
  id: string;
  status: string;
  current: number;
  total: number;
  /** The layer came from the registry in this pull, rather than being on disk already. */
  fetched: boolean;
  done: boolean;
}

export interface PullProgress {
  ref: string;
  layers: LayerProgress[];
  /** Bytes downloaded so far, over every layer. */
  bytes: number;
  /** Bytes to download, as far as the engine has told; grows as layers start. */
  total: number;
}

export interface PullOptions {
  /** `os/arch[/variant]` for the engine to pick from an index. */
  platform?: string;
  /** The `X-Registry-Auth` value for the registry the pull goes to. */
  registryAuth?: string;
  /**
   * Abort when the stream has been silent this long while layers download, ms; 0 never. Once
   * all are downloaded, ten times as long (extracting sends nothing).
   */
  stallMs?: number;
  /**
   * Give the pull up once the engine has started layer downloads over more often than this
   * (it tries five times, waiting longer each time); unset leaves the engine to it.
   */
  maxRetries?: number;
  signal?: AbortSignal;
  onProgress?: (progress: PullProgress) => void;
}

export interface PullResult {
  /** Bytes downloaded from the registry. */
  bytes: number;
  /** The `Digest: sha256:...` line, when the engine sent one. */
  digest: string | undefined;
  /** The closing `Status: ...` line. */
  status: string | undefined;
}

/**
 * The container engine as the agent needs it. The Docker Engine API is the one implementation;
 * the seam keeps the agent's plans free of HTTP.
 */
export interface Engine {
  readonly address: string;
  info(): Promise<EngineInfo>;
  version(): Promise<EngineVersion>;
  /** null when the engine has no such image. */
  inspectImage(name: string): Promise<ImageInspect | null>;
  listImages(): Promise<ImageSummary[]>;
  listContainers(): Promise<ContainerSummary[]>;
  pull(ref: string, options?: PullOptions): Promise<PullResult>;
  tag(source: string, repo: string, tag: string): Promise<void>;
  /** Removes one reference, or the image when given its id; false when it was not there. */
  removeImage(name: string): Promise<boolean>;
  close(): Promise<void>;
}
