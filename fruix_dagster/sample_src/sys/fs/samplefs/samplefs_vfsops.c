/* samplefs: a file system module that mounts nothing. */
struct samplefs_vfsops {
	const char	*name;
	int		(*mount)(const char *);
};

static int
samplefs_mount(const char *path)
{
	return (path == 0 ? 22 : 0);
}

const struct samplefs_vfsops samplefs_vfsops = {
	.name = "samplefs",
	.mount = samplefs_mount,
};
