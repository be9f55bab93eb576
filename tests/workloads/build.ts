export function buildWorkloads(): Promise<string> {
  return Promise.resolve(new URL("./bin", import.meta.url).pathname);
}
